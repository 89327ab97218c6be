// Agora's web UI in a real browser: headless Chromium (Debian's) driven by
// playwright-core, against a running `agora up` (started by `.ci/browser-tests`).
//
//   AGORA_URL            the shop's URL (required)
//   AGORA_ADMIN_PASSWORD the admin's password (required)
//   SCREENSHOTS          where the page screenshots go (default: docs/screenshots)
//   CHROMIUM             the browser binary (default: /usr/bin/chromium)
//
// Every wait is a condition polled under a deadline (playwright's auto-waiting), never
// a fixed sleep. The run fails on any page error, any console error, and any HTTP
// error answer that the scenario did not announce as expected.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.AGORA_URL;
const adminPassword = process.env.AGORA_ADMIN_PASSWORD;
assert.ok(base && adminPassword, "set AGORA_URL and AGORA_ADMIN_PASSWORD");
const shots = process.env.SCREENSHOTS || "docs/screenshots";
mkdirSync(shots, { recursive: true });

const WAIT = 20_000;
const problems = [];
/** HTTP error answers the current step expects: [{status, path: RegExp}]. */
let expected = [];

function isExpected(status, url) {
  const path = new URL(url).pathname;
  return expected.some((e) => e.status === status && e.path.test(path));
}

async function withExpectedErrors(errors, fn) {
  expected = errors;
  try {
    return await fn();
  } finally {
    expected = [];
  }
}

function watch(page, who) {
  page.on("pageerror", (error) => problems.push(`${who}: page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const url = message.location().url || "";
    // Chromium reports every HTTP error answer as a console error; those are judged
    // by the response listener below.
    if (message.text().startsWith("Failed to load resource") && url.includes("/api/")) return;
    problems.push(`${who}: console error: ${message.text()} (${url})`);
  });
  page.on("response", (response) => {
    const status = response.status();
    if (status >= 400 && !isExpected(status, response.url())) {
      problems.push(`${who}: unexpected ${status} from ${response.request().method()} ${response.url()}`);
    }
  });
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

const steps = [];
async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    steps.push(`ok   ${name} (${Date.now() - started} ms)`);
    console.log(`ok   ${name}`);
  } catch (error) {
    console.log(`FAIL ${name}`);
    throw error;
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
  ],
});

try {
  const viewport = { width: 1280, height: 900 };
  const customerContext = await browser.newContext({ viewport });
  const adminContext = await browser.newContext({ viewport });
  customerContext.setDefaultTimeout(WAIT);
  adminContext.setDefaultTimeout(WAIT);
  const shop = await customerContext.newPage();
  const ops = await adminContext.newPage();
  watch(shop, "customer");
  watch(ops, "admin");
  const email = `ada-${Date.now()}@example.com`;

  await step("the product list shows the demo products with prices and stock", async () => {
    await shop.goto(base);
    await shop.getByRole("heading", { name: "Products", level: 1 }).waitFor();
    const cards = shop.locator("article.product");
    await cards.first().waitFor();
    assert.ok(await cards.count() >= 12, "at least 12 demo products");
    assert.match(await cards.first().locator(".price").textContent(), /\d/);
    await shot(shop, "products");
  });

  await step("sign up", async () => {
    await shop.getByRole("link", { name: "Sign up" }).click();
    await shop.getByLabel("Name").fill("Ada Lovelace");
    await shop.getByLabel("Email").fill(email);
    await shop.getByLabel("Password").fill("correct horse battery");
    await shot(shop, "sign-up");
    await shop.getByRole("button", { name: "Sign up", exact: true }).click();
    await shop.getByRole("heading", { name: "Your account" }).waitFor();
  });

  await step("set a shipping address and a payment method", async () => {
    await shop.getByLabel("Street and number").fill("12 Analytical Row");
    await shop.getByLabel("Postal code").fill("N1 9GU");
    await shop.getByLabel("City").fill("London");
    await shop.getByLabel("Country").fill("GB");
    await shop.getByRole("button", { name: "Save address" }).click();
    await shop.getByText("Address saved.").waitFor();
    await shop.getByRole("button", { name: "Save payment method" }).click();
    await shop.getByText("Payment method saved.").waitFor();
    await shot(shop, "account");
  });

  await step("add to cart", async () => {
    await shop.getByRole("link", { name: "Products" }).click();
    await shop.getByRole("button", { name: /^Add .+ to cart$/ }).first().click();
    await shop.getByText(/added to the cart/).waitFor();
    await shop.getByRole("link", { name: "Cart (1)" }).click();
    await shop.getByRole("link", { name: "Go to checkout" }).waitFor();
    await shot(shop, "cart");
  });

  /** Opens the checkout until ordering's replica knows the address (it follows events). */
  async function openCheckout(page) {
    const deadline = Date.now() + WAIT;
    for (;;) {
      // A new URL each time: a full page load, not a same-document hash change.
      await page.goto(`${base}/?load=${Date.now()}#/checkout`);
      await page.getByRole("heading", { name: "Checkout" }).waitFor();
      await page.locator("#address-source, #ship-h ~ p, .error").first().waitFor();
      if (await page.locator("#address-source").count()) return;
      assert.ok(Date.now() < deadline, "the checkout never showed the saved address");
      await page.waitForTimeout(100);
    }
  }

  let firstOrder;
  await step("checkout shows address, source, payment, lines, total; Buy → the order reaches shipped", async () => {
    await openCheckout(shop);
    assert.match(await shop.locator("#shipping-address").textContent(), /12 Analytical Row/);
    assert.equal(await shop.locator("#address-source").getAttribute("data-source"), "replica");
    await shop.getByText("Card ending in 4242").waitFor();
    assert.match(await shop.locator("#total").textContent(), /\d/);
    await shot(shop, "checkout");
    await shop.getByRole("button", { name: "Buy" }).click();
    await shop.waitForURL(/#\/orders\/[0-9a-f-]{36}$/);
    firstOrder = shop.url().split("/").pop();
    await shop.locator('#order-status[data-status="shipped"]').waitFor({ timeout: 30_000 });
    assert.equal(await shop.locator("#order-address-source").getAttribute("data-source"), "replica");
    const history = await shop.locator("#order-history li").allTextContents();
    assert.ok(history.length >= 4, `the history shows every step: ${history}`);
    await shot(shop, "order");
  });

  await step("the mailbox has the confirmation and the shipped message, naming the product", async () => {
    await shop.getByRole("link", { name: "Mailbox" }).click();
    await shop.locator("#mailbox article").nth(1).waitFor();
    const text = await shop.locator("#mailbox").textContent();
    assert.match(text, /order confirmation/i);
    assert.match(text, /order shipped/i);
    await shot(shop, "mailbox");
  });

  await step("the admin opens the ops console: services, subscriptions, live events", async () => {
    await ops.goto(`${base}/#/ops`);
    await ops.getByLabel("Email").fill("admin@agora.local");
    await ops.getByLabel("Password").fill(adminPassword);
    await ops.getByRole("button", { name: "Sign in", exact: true }).click();
    await ops.getByRole("heading", { name: "Ops console" }).waitFor();
    await ops.locator("#service-customer").getByText("up").waitFor();
    await ops.locator("#subscriptions tbody tr").first().waitFor();
    await ops.locator("#live-events tbody tr").first().waitFor();
    assert.ok(Number(await ops.locator("#online-users").textContent()) >= 2, "two users signed in");
    await shot(ops, "ops-console");
  });

  await step("the admin sees the order's event timeline with causation links", async () => {
    await ops.goto(`${base}/#/orders/${firstOrder}`);
    await ops.locator("#event-timeline").getByText("ShipmentDispatched").first().waitFor();
    const rows = await ops.locator("#event-timeline tbody tr").allTextContents();
    // Oldest first: the authorization, then the acceptance, then what it caused.
    assert.match(rows[0], /PaymentAuthorized/);
    assert.ok(rows.some((row) => /OrderAcceptedordering/.test(row)), "the acceptance is listed");
    assert.ok(rows.some((row) => /OrderAccepted$/.test(row.trim())), "a later event names OrderAccepted as its cause");
    await shot(ops, "order-timeline-admin");
  });

  await step("customer switched down from the console: it shows there, and checkout still succeeds from the replica", async () => {
    await ops.goto(`${base}/#/ops`);
    await ops.locator("#chaos-customer-mode").selectOption("down");
    await ops.locator("#chaos-customer-apply").click();
    await ops.locator('#service-customer [data-mode="down"]').waitFor();
    await ops.locator("#service-customer td").first().getByText("down").waitFor();
    await shot(ops, "ops-console-customer-down");

    await shop.goto(`${base}/#/`);
    await shop.getByRole("button", { name: /^Add .+ to cart$/ }).nth(1).click();
    await openCheckout(shop);
    assert.equal(await shop.locator("#address-source").getAttribute("data-source"), "replica");
    await shop.getByRole("button", { name: "Buy" }).click();
    await shop.waitForURL(/#\/orders\/[0-9a-f-]{36}$/);
    await shop.locator("#order-status").waitFor();
    assert.equal(await shop.locator("#order-address-source").getAttribute("data-source"), "replica");
  });

  await step("in sync mode with customer down, the checkout says so instead of showing stale data", async () => {
    await ops.locator("#customer-data-sync").check();
    await ops.getByText("Ordering now takes customer data from: sync.").waitFor();
    await withExpectedErrors([{ status: 503, path: /^\/api\/ordering\/checkout\/preview$/ }], async () => {
      await shop.goto(`${base}/#/`);
      await shop.getByRole("button", { name: /^Add .+ to cart$/ }).first().click();
      await shop.goto(`${base}/#/checkout`);
      await shop.getByText("The checkout cannot show your details right now").waitFor();
      await shot(shop, "checkout-sync-customer-down");
    });
    await ops.locator("#customer-data-replica").check();
    await ops.getByText("Ordering now takes customer data from: replica.").waitFor();
  });

  await step("Change address: the order uses the address given at checkout", async () => {
    await openCheckout(shop);
    await shop.getByRole("button", { name: "Change address" }).click();
    await shop.getByLabel("Street and number").fill("1 Difference Engine Lane");
    await shop.getByLabel("Postal code").fill("10115");
    await shop.getByLabel("City").fill("Berlin");
    await shop.getByLabel("Country").fill("DE");
    await shot(shop, "checkout-change-address");
    await shop.getByRole("button", { name: "Use this address" }).click();
    await shop.locator('#address-source[data-source="override"]').waitFor();
    assert.match(await shop.locator("#shipping-address").textContent(), /Difference Engine/);
    await shop.getByRole("button", { name: "Buy" }).click();
    await shop.waitForURL(/#\/orders\/[0-9a-f-]{36}$/);
    await shop.locator('#order-address-source[data-source="override"]').waitFor();
    assert.match(await shop.locator("address").first().textContent(), /Difference Engine/);
  });

  await step("payment slowed from the console: checkout fails fast with a clear message; back to ok, it works", async () => {
    await ops.locator("#chaos-customer-mode").selectOption("ok");
    await ops.locator("#chaos-customer-apply").click();
    await ops.locator('#service-customer [data-mode="ok"]').waitFor();
    await ops.locator("#chaos-payment-mode").selectOption("slow");
    await ops.locator("#chaos-payment-latency").fill("3000");
    await ops.locator("#chaos-payment-apply").click();
    await ops.locator('#service-payment [data-mode="slow"]').waitFor();
    await withExpectedErrors([{ status: 503, path: /^\/api\/ordering\/orders$/ }], async () => {
      await shop.goto(`${base}/#/`);
      await shop.getByRole("button", { name: /^Add .+ to cart$/ }).first().click();
      await openCheckout(shop);
      const started = Date.now();
      await shop.getByRole("button", { name: "Buy" }).click();
      await shop.getByText("The order could not be placed right now").waitFor();
      assert.ok(Date.now() - started < 2_500, "the checkout answered within its deadline, not after payment's 3 s");
      await shot(shop, "checkout-payment-slow");
    });
    await ops.locator("#chaos-payment-mode").selectOption("ok");
    await ops.locator("#chaos-payment-apply").click();
    await ops.locator('#service-payment [data-mode="ok"]').waitFor();
    // The breaker may still be open for a moment: Buy again until it lets the order through.
    await withExpectedErrors([{ status: 503, path: /^\/api\/ordering\/orders$/ }], async () => {
      const deadline = Date.now() + WAIT;
      while (!/#\/orders\/[0-9a-f-]{36}$/.test(shop.url())) {
        assert.ok(Date.now() < deadline, "checkout did not recover after payment came back");
        await shop.getByRole("button", { name: "Buy" }).click();
        await Promise.race([
          shop.waitForURL(/#\/orders\/[0-9a-f-]{36}$/),
          shop.getByText("The order could not be placed right now").waitFor(),
        ]);
      }
    });
    await shop.locator("#order-status").waitFor();
  });

  await step("inventory down: the product list degrades visibly, not into an error page", async () => {
    await ops.locator("#chaos-inventory-mode").selectOption("down");
    await ops.locator("#chaos-inventory-apply").click();
    await ops.locator('#service-inventory [data-mode="down"]').waitFor();
    await shop.goto(`${base}/?load=${Date.now()}#/`);
    await shop.getByText("Part of the shop is unavailable right now").waitFor();
    await shop.getByText("Stock unknown").first().waitFor();
    assert.match(await shop.locator("article.product .price").first().textContent(), /\d/, "prices still shown");
    await shot(shop, "products-degraded");
    await ops.locator("#chaos-inventory-mode").selectOption("ok");
    await ops.locator("#chaos-inventory-apply").click();
    await ops.locator('#service-inventory [data-mode="ok"]').waitFor();
  });

  await step("the bus can be paused and resumed from the console", async () => {
    await ops.getByRole("button", { name: "Pause the bus" }).click();
    await ops.locator("#bus-state").getByText("paused").waitFor();
    await ops.getByRole("button", { name: "Resume the bus" }).click();
    await ops.locator("#bus-state").getByText("running").waitFor();
  });

  await step("keyboard: the main navigation and the Buy flow are reachable by Tab", async () => {
    await shop.goto(`${base}/#/`);
    await shop.reload();
    await shop.getByRole("heading", { name: "Products", level: 1 }).waitFor();
    await shop.keyboard.press("Tab");
    const first = await shop.evaluate(() => document.activeElement && document.activeElement.textContent);
    assert.equal(first, "Skip to content");
    let reachedCart = false;
    for (let i = 0; i < 10 && !reachedCart; i++) {
      await shop.keyboard.press("Tab");
      reachedCart = await shop.evaluate(() => /^Cart/.test(document.activeElement.textContent || ""));
    }
    assert.ok(reachedCart, "the cart link is reachable by keyboard");
  });

  assert.deepEqual(problems, [], "no page error, console error or unexpected HTTP error");
  console.log(`\n${steps.length} browser steps passed; screenshots in ${shots}`);
} finally {
  await browser.close();
}
