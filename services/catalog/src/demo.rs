//! The demo shop's products, with fixed ids so that the demo data of other services
//! (ordering's prices, inventory's stock) can name them.

use uuid::Uuid;

/// One product of the demo shop.
///
/// Only `name` and `description` are catalog's data. `price_cents` (EUR) and `stock`
/// ride along for the composition (`agora up`), which seeds ordering's prices and
/// inventory's stock with them: catalog never stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoProduct {
    pub id: Uuid,
    pub name: &'static str,
    pub description: &'static str,
    /// The unit price in euro cents.
    pub price_cents: i64,
    /// Units on hand.
    pub stock: u32,
}

/// The currency of [`DemoProduct::price_cents`].
pub const DEMO_CURRENCY: &str = "EUR";

/// Fixed ids `5eed0000-0000-4000-8000-0000000000NN` (a valid RFC 4122 v4 layout; the
/// `5eed` prefix makes them easy to spot in logs). Never change them: other services'
/// demo data and stored data refer to them.
const fn demo_id(n: u128) -> Uuid {
    Uuid::from_u128(0x5eed0000_0000_4000_8000_000000000000 | n)
}

/// The demo products, in the order they are added: twelve products, ids ending in
/// `01` to `12` (hexadecimal `0x01`…`0x0c`).
pub fn demo_products() -> Vec<DemoProduct> {
    let products: [(&str, &str, i64, u32); 12] = [
        (
            "Espresso Cup",
            "A thick-walled porcelain cup that keeps a double espresso hot.",
            1_290,
            120,
        ),
        (
            "French Press",
            "One litre of coffee, a stainless steel filter and no paper waste.",
            3_490,
            40,
        ),
        (
            "Hand Grinder",
            "Ceramic burrs, fifteen grind settings, from espresso to cold brew.",
            5_900,
            25,
        ),
        (
            "Pour-over Kettle",
            "A gooseneck kettle for a slow, steady pour.",
            4_450,
            30,
        ),
        (
            "Coffee Beans, 1 kg",
            "Medium roast from a single farm, roasted the week you order.",
            2_400,
            200,
        ),
        (
            "Tea Sampler",
            "Twelve loose-leaf teas in tins, from sencha to smoky lapsang.",
            2_990,
            60,
        ),
        (
            "Milk Frother",
            "Hot or cold foam in ninety seconds, at the push of one button.",
            3_999,
            35,
        ),
        (
            "Travel Mug",
            "Vacuum insulated, leak-proof lid, fits every car cup holder.",
            2_250,
            80,
        ),
        (
            "Digital Scale",
            "Weighs to a tenth of a gram, with a built-in brew timer.",
            2_790,
            45,
        ),
        (
            "Cold Brew Bottle",
            "Steep overnight in the fridge, pour through the built-in filter.",
            1_990,
            70,
        ),
        (
            "Barista Apron",
            "Waxed canvas, leather straps, pockets for a thermometer and a pen.",
            4_900,
            15,
        ),
        (
            "Descaler",
            "Citric-acid descaler for kettles and espresso machines; four doses.",
            890,
            150,
        ),
    ];
    products
        .into_iter()
        .zip(1u128..)
        .map(|((name, description, price_cents, stock), n)| DemoProduct {
            id: demo_id(n),
            name,
            description,
            price_cents,
            stock,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::domain::{Description, ProductName};

    #[test]
    fn demo_products_are_valid_distinct_and_stable() {
        let products = demo_products();
        assert!(products.len() >= 12);
        assert_eq!(
            products[0].id.to_string(),
            "5eed0000-0000-4000-8000-000000000001"
        );
        assert_eq!(
            products[11].id.to_string(),
            "5eed0000-0000-4000-8000-00000000000c"
        );
        let ids: HashSet<_> = products.iter().map(|p| p.id).collect();
        let names: HashSet<_> = products.iter().map(|p| p.name).collect();
        assert_eq!(ids.len(), products.len());
        assert_eq!(names.len(), products.len());
        for product in &products {
            assert_eq!(product.id.get_version_num(), 4);
            assert!(ProductName::parse(product.name).is_ok());
            assert!(Description::parse(product.description).is_ok());
            assert!(product.price_cents > 0 && product.stock > 0);
        }
        assert_eq!(demo_products(), products);
    }
}
