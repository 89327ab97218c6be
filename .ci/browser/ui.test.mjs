// Agora's web UI in a real browser: headless Chromium (Debian's) driven by
// playwright-core, against a running `agora up` (started by `.ci/browser-tests`).
//
//   AGORA_URL            the shop's URL (required)
//   AGORA_ADMIN_PASSWORD the admin's password (required)
//   SCREENSHOTS          where the page screenshots go (default: docs/screenshots)
//   CHROMIUM             the browser binary (default: /usr/bin/chromium)
//
// The whole walk runs twice: at 1280×800 (screenshots `<page>.png`) and at 390×844, a
// phone (`phone-<page>.png`). On every page, signed in and out, axe-core (from npm,
// pinned) must find no serious or critical violation, and no page may be wider than
// the viewport (on the phone, at 390 and at 360 px).
//
// Every wait is a condition polled under a deadline (playwright's auto-waiting), never
// a fixed sleep. The run fails on any page error, any console error, and any HTTP
// error answer that the scenario did not announce as expected.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
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
  // From the top: a full-page shot of a scrolled page would show the sticky header mid-page.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** axe-core on the page as it is: no serious or critical violation. */
async function axeClean(page, where) {
  if (!(await page.evaluate(() => typeof window.axe === "object"))) {
    // Evaluated through the DevTools protocol: the page's CSP (script-src 'self') stays on.
    await page.evaluate(axeSource);
  }
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(" | ")}`);
  });
  assert.deepEqual(violations, [], `axe-core on ${where}`);
}

/** No page wider than its viewport; on a phone also at 360 px. */
async function fits(page, where) {
  const measure = () => page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > width + 0.5 && el.getClientRects().length)
      .slice(0, 5)
      .map((el) => `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ""}.${el.className} (${Math.round(el.getBoundingClientRect().right)} px)`);
    return { scroll: document.documentElement.scrollWidth, width, wide };
  });
  const size = page.viewportSize();
  const widths = size.width < 600 ? [size.width, 360] : [size.width];
  for (const width of widths) {
    if (width !== size.width) await page.setViewportSize({ width, height: size.height });
    const m = await measure();
    assert.ok(m.scroll <= m.width && m.wide.length === 0,
      `${where} at ${width} px is ${m.scroll} px wide; past the edge: ${m.wide.join(", ")}`);
  }
  if (page.viewportSize().width !== size.width) await page.setViewportSize(size);
}

/** Both: what every page gets. */
async function checkPage(page, where) {
  await fits(page, where);
  await axeClean(page, where);
}

/** Whether the locator's box lies inside the viewport (what the person sees now). */
async function inView(locator) {
  const box = await locator.boundingBox();
  const size = locator.page().viewportSize();
  return !!box && box.y >= 0 && box.x >= 0 && box.y + box.height <= size.height && box.x + box.width <= size.width;
}

/** The contrast of the focused element's outline against what is behind it. */
function focusRing(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    const style = getComputedStyle(el);
    const rgba = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    let behind = [255, 255, 255];
    for (let node = el.parentElement; node; node = node.parentElement) {
      const bg = rgba(getComputedStyle(node).backgroundColor);
      if (bg.length === 3 || (bg.length === 4 && bg[3] > 0)) { behind = bg; break; }
    }
    const lum = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const a = lum(rgba(style.outlineColor));
    const b = lum(behind);
    return {
      what: `${el.tagName.toLowerCase()} "${(el.textContent || "").trim().slice(0, 30)}"`,
      style: style.outlineStyle, width: parseFloat(style.outlineWidth),
      ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05),
    };
  });
}

/** Tabs through `count` stops from where focus is: each shows a ring of at least 3:1. */
async function focusRingsVisible(page, count, where) {
  for (let i = 0; i < count; i++) {
    await page.keyboard.press("Tab");
    const ring = await focusRing(page);
    assert.ok(ring.style !== "none" && ring.width >= 2 && ring.ratio >= 3,
      `${where}: the focus ring of ${ring.what} is ${ring.style} ${ring.width}px at ${ring.ratio.toFixed(2)}:1`);
  }
}

const REFERENCE = /^AG-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/;

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


/** Opens a link of the main navigation, through the menu button on a phone. */
async function nav(page, name) {
  const toggle = page.locator("#menu-toggle");
  if (await toggle.isVisible()) {
    if ((await toggle.getAttribute("aria-expanded")) !== "true") await toggle.click();
    assert.equal(await toggle.getAttribute("aria-expanded"), "true");
  }
  await page.locator("#nav").getByRole("link", { name, exact: true }).click();
}

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

const ORDER_URL = /#\/orders\/[0-9a-f-]{36}$/;

async function walk(viewport, label) {
  const phone = viewport.width < 600;
  const prefix = phone ? "phone-" : "";
  const shoot = (page, name) => shot(page, `${prefix}${name}`);
  const stepAt = (name, fn) => step(`[${label}] ${name}`, fn);
  const customerContext = await browser.newContext({ viewport });
  const adminContext = await browser.newContext({ viewport });
  customerContext.setDefaultTimeout(WAIT);
  adminContext.setDefaultTimeout(WAIT);
  const shop = await customerContext.newPage();
  const ops = await adminContext.newPage();
  watch(shop, `customer (${label})`);
  watch(ops, `admin (${label})`);
  const email = `ada-${label}-${Date.now()}@example.com`;

  await stepAt("the product list shows the demo products with prices and stock", async () => {
    await shop.goto(base);
    await shop.getByRole("heading", { name: "Products", level: 1 }).waitFor();
    const cards = shop.locator("article.product");
    await cards.first().waitFor();
    assert.ok(await cards.count() >= 12, "at least 12 demo products");
    assert.match(await cards.first().locator(".price").textContent(), /\d/);
    await checkPage(shop, "the products, signed out");
    await shoot(shop, "products");
  });

  await stepAt("signed out: cart, sign in, sign up and an unknown page pass axe and fit", async () => {
    await shop.locator("#cart-link").click();
    await shop.getByRole("heading", { name: "Cart", level: 1 }).waitFor();
    await checkPage(shop, "the empty cart");
    await nav(shop, "Sign in");
    await shop.getByRole("heading", { name: "Sign in", level: 1 }).waitFor();
    await checkPage(shop, "sign in");
    await shop.goto(`${base}/#/no-such-page`);
    await shop.getByRole("heading", { name: "Not found", level: 1 }).waitFor();
    await checkPage(shop, "not found");
  });

  await stepAt("the skip link moves focus to the page and keeps the route; focus rings are ≥ 3:1", async () => {
    await shop.goto(`${base}/?load=${Date.now()}#/`);
    await shop.getByRole("heading", { name: "Products", level: 1 }).waitFor();
    await shop.keyboard.press("Tab");
    assert.equal(await shop.evaluate(() => document.activeElement.textContent), "Skip to content");
    const ring = await focusRing(shop);
    assert.ok(ring.ratio >= 3, `the skip link's ring is ${ring.ratio.toFixed(2)}:1`);
    await shop.keyboard.press("Enter");
    assert.equal(await shop.evaluate(() => document.activeElement.id), "main");
    assert.match(shop.url(), /#\/$/, "the route stays");
    await shop.getByRole("heading", { name: "Products", level: 1 }).waitFor();
    assert.equal(await shop.getByRole("heading", { name: "Not found" }).count(), 0);
    // From the top: the header's links and buttons (on its blue), then the page's.
    await shop.evaluate(() => document.activeElement.blur());
    await focusRingsVisible(shop, 12, "the products page");
  });

  await stepAt("sign up", async () => {
    await shop.goto(`${base}/#/`);
    await nav(shop, "Sign up");
    await shop.getByLabel("Name").fill("Ada Lovelace");
    await shop.getByLabel("Email").fill(email);
    await shop.getByLabel("Password").fill("correct horse battery");
    await checkPage(shop, "sign up");
    await shoot(shop, "sign-up");
    await shop.getByRole("button", { name: "Sign up", exact: true }).click();
    await shop.getByRole("heading", { name: "Your account" }).waitFor();
  });

  await stepAt("account: what is missing now, saved values shown normalised, feedback in view, plain inputs", async () => {
    const missing = shop.locator("#account-missing");
    await missing.getByText("To check out, add a shipping address and a payment method.").waitFor();
    await checkPage(shop, "the account");
    await focusRingsVisible(shop, 6, "the account page");
    const weight = await shop.getByLabel("City").evaluate((el) => getComputedStyle(el).fontWeight);
    assert.equal(weight, "400", "typed text is not bold");
    await shop.getByLabel("Street and number").fill("12 Analytical Row");
    await shop.getByLabel("Postal code").fill("N1 9GU");
    await shop.getByLabel("City").fill("London");
    await shop.getByLabel("Country").fill("gb");
    await shop.getByRole("button", { name: "Save address" }).click();
    const saved = shop.locator("#flash").getByText("Address saved.");
    await saved.waitFor();
    assert.ok(await inView(saved), "the address's confirmation is in view");
    assert.equal(await shop.getByLabel("Country").inputValue(), "GB", "the form shows the saved value");
    await missing.getByText("To check out, add a payment method.").waitFor();
    await shop.getByRole("button", { name: "Save payment method" }).click();
    const paid = shop.locator("#flash").getByText("Payment method saved.");
    await paid.waitFor();
    assert.ok(await inView(paid), "the payment method's confirmation is in view");
    await shop.waitForFunction(() => document.getElementById("account-missing").textContent === "");
    await shoot(shop, "account");
  });

  await stepAt("add to cart low on the page: the toast and the cart count are in view", async () => {
    await nav(shop, "Products");
    await shop.getByRole("heading", { name: "Products", level: 1 }).waitFor();
    await checkPage(shop, "the products, signed in");
    const buttons = shop.getByRole("button", { name: /^Add to cart/ });
    await buttons.first().waitFor();
    const last = buttons.nth((await buttons.count()) - 1);
    await last.scrollIntoViewIfNeeded();
    await last.click();
    const added = shop.locator("#flash").getByText(/added to the cart/);
    await added.waitFor();
    assert.ok(await inView(added), "the toast is in view");
    const cartLink = shop.getByRole("link", { name: "Cart (1)" });
    await cartLink.waitFor();
    assert.ok(await inView(cartLink), "the cart count is in view");
    await buttons.first().click();
    await shop.getByRole("link", { name: "Cart (2)" }).waitFor();
    if (phone) {
      const header = await shop.locator("header.top").boundingBox();
      assert.ok(header.height <= 64, `the phone header is compact: ${header.height} px`);
      assert.equal(await shop.locator("#nav").isVisible(), false, "the menu is closed");
      assert.ok(await shop.locator("#menu-toggle").isVisible(), "a menu button");
    } else {
      assert.equal(await shop.locator("#menu-toggle").isVisible(), false, "no menu button on a desktop");
    }
    await shop.getByRole("link", { name: "Cart (2)" }).click();
    await shop.getByRole("link", { name: "Go to checkout" }).waitFor();
    assert.equal(await shop.locator("#flash").textContent(), "", "the cart's message stays with the products");
    await checkPage(shop, "the cart");
    const card = await shop.locator("main .card").first().boundingBox();
    for (const remove of await shop.getByRole("button", { name: /^Remove / }).all()) {
      const box = await remove.boundingBox();
      assert.ok(box.x + box.width <= card.x + card.width, "Remove is inside the card");
    }
    await shoot(shop, "cart");
  });

  let firstOrder;
  let firstReference;
  await stepAt("checkout; Change address opens and cancels; Buy → the order page shows its steps and reference", async () => {
    await openCheckout(shop);
    assert.match(await shop.locator("#shipping-address").textContent(), /12 Analytical Row/);
    assert.equal(await shop.locator("#address-source").getAttribute("data-source"), "replica");
    await shop.getByText("Card ending in 4242").waitFor();
    assert.match(await shop.locator("#total").textContent(), /\d/);
    await checkPage(shop, "the checkout");
    const change = shop.getByRole("button", { name: "Change address" });
    assert.equal(await change.getAttribute("aria-expanded"), "false");
    await change.click();
    assert.equal(await change.getAttribute("aria-expanded"), "true");
    await shop.locator("#change-address form").waitFor();
    await checkPage(shop, "the checkout, changing the address");
    await shop.locator("#change-address").getByRole("button", { name: "Cancel" }).click();
    assert.equal(await change.getAttribute("aria-expanded"), "false", "Cancel closes it");
    assert.equal(await shop.locator("#change-address form").count(), 0);
    assert.equal(await shop.evaluate(() => document.activeElement.id), "change-address-toggle");
    await shoot(shop, "checkout");
    await shop.getByRole("button", { name: "Buy" }).click();
    await shop.waitForURL(ORDER_URL);
    firstOrder = shop.url().split("/").pop();
    await shop.locator('#order-status[data-status="shipped"]').waitFor({ timeout: 30_000 });
    firstReference = (await shop.getByRole("heading", { level: 1 }).textContent()).replace(/^Order /, "");
    assert.match(firstReference, REFERENCE);
    assert.equal(await shop.locator("#order-address-source").getAttribute("data-source"), "replica");
    const steps = shop.locator("#order-history li");
    assert.deepEqual(await steps.evaluateAll((li) => li.map((l) => l.dataset.step)),
      ["accepted", "paid", "ready_for_shipping", "shipped"]);
    assert.deepEqual(await steps.evaluateAll((li) => li.map((l) => l.dataset.done)), ["true", "true", "true", "true"]);
    assert.equal(await shop.locator("#order-history li time").count(), 4, "every step with its time");
    assert.equal(await shop.locator('#order-history li[aria-current="step"]').getAttribute("data-step"), "shipped");
    assert.doesNotMatch(await shop.locator("body").textContent(), /accepted\./, "no message older than the page");
    assert.equal(await shop.locator("#flash").textContent(), "");
    await checkPage(shop, "the order");
    await shoot(shop, "order");
  });

  await stepAt("the reference: the orders list shows it, and the order opens by it", async () => {
    await nav(shop, "Orders");
    const link = shop.locator("a.order-ref").first();
    await link.waitFor();
    assert.equal(await link.textContent(), firstReference);
    await checkPage(shop, "the orders");
    await shoot(shop, "orders");
    await shop.goto(`${base}/#/orders/${firstReference}`);
    await shop.getByRole("heading", { name: `Order ${firstReference}` }).waitFor();
    await shop.locator('#order-status[data-status="shipped"]').waitFor();
  });

  await stepAt("the mailbox: confirmation and shipped message, by reference, in paragraphs and lines", async () => {
    await nav(shop, "Mailbox");
    await shop.locator("#mailbox article").nth(1).waitFor();
    const text = await shop.locator("#mailbox").textContent();
    assert.match(text, new RegExp(`Your order ${firstReference} is confirmed`));
    assert.match(text, new RegExp(`Your order ${firstReference} has shipped`));
    const confirmation = shop.locator("#mailbox article", { hasText: "is confirmed" });
    assert.ok(await confirmation.locator(".mail-body p").count() >= 3, "the body's paragraphs");
    assert.ok(await confirmation.locator(".mail-body br").count() >= 1, "the lines of the two products");
    assert.match(await confirmation.locator(".mail-body").textContent(), new RegExp(firstReference));
    await checkPage(shop, "the mailbox");
    await shoot(shop, "mailbox");
  });

  await stepAt("the admin opens the ops console: services, subscriptions, live events", async () => {
    await ops.goto(`${base}/#/ops`);
    await ops.getByLabel("Email").fill("admin@agora.local");
    await ops.getByLabel("Password").fill(adminPassword);
    await ops.getByRole("button", { name: "Sign in", exact: true }).click();
    await ops.getByRole("heading", { name: "Ops console" }).waitFor();
    await ops.locator("#service-customer").getByText("up").waitFor();
    await ops.locator("#subscriptions tbody tr").first().waitFor();
    await ops.locator("#live-events tbody tr").first().waitFor();
    // A projection of sign-in events: eventually two (the customer and the admin).
    await ops.waitForFunction(() => Number(document.getElementById("online-users").textContent) >= 2);
    await checkPage(ops, "the ops console");
    await shoot(ops, "ops-console");
  });

  await stepAt("the admin sees the order's event timeline with causation links", async () => {
    await ops.goto(`${base}/#/orders/${firstOrder}`);
    await ops.locator("#event-timeline").getByText("ShipmentDispatched").first().waitFor();
    const rows = await ops.locator("#event-timeline tbody tr").allTextContents();
    // Oldest first: the authorization, then the acceptance, then what it caused.
    assert.match(rows[0], /PaymentAuthorized/);
    assert.ok(rows.some((row) => /OrderAccepted/.test(row) && /ordering/.test(row)), "the acceptance is listed");
    assert.ok(rows.some((row) => /OrderAccepted$/.test(row.trim())), "a later event names OrderAccepted as its cause");
    await checkPage(ops, "the order (admin)");
    await shoot(ops, "order-timeline-admin");
  });

  await stepAt("from the timeline, the admin opens the checkout's trace as a waterfall", async () => {
    await ops.getByRole("link", { name: "Waterfall of the checkout's trace" }).click();
    await ops.getByRole("heading", { name: /^Trace …[0-9a-f]{8}$/ }).waitFor();
    const table = ops.locator("#trace-waterfall");
    // Until the last delivery of the flow is in (the page shows what is kept now).
    const deadline = Date.now() + WAIT;
    for (;;) {
      await table.locator("tbody tr").first().waitFor();
      const done = await table.locator('tr[data-service="notification"][data-kind="consumer"]').count();
      if (done >= 2) break;
      assert.ok(Date.now() < deadline, "the trace never reached notification twice");
      await ops.reload();
    }
    const services = new Set(await table.locator("tbody tr").evaluateAll(
      (rows) => rows.map((row) => row.dataset.service)));
    for (const service of ["gateway", "ordering", "payment", "inventory", "fulfilment", "shipping", "notification"]) {
      assert.ok(services.has(service), `${service} in the waterfall (${[...services]})`);
    }
    // The root is the gateway's request; deliveries say how long they waited on the bus.
    assert.match(await table.locator("tbody tr").first().textContent(), /gateway.*POST \/api\/ordering/);
    assert.ok(await table.locator("tbody tr", { hasText: "on the bus" }).count() >= 5, "bus hops are shown");
    assert.ok(await table.locator(".track .hop").count() >= 5, "bus hops are drawn as gaps");
    await checkPage(ops, "the trace waterfall");
    await shoot(ops, "trace-waterfall");
  });
  await stepAt("customer switched down from the console: it shows there, and checkout still succeeds from the replica", async () => {
    await ops.goto(`${base}/#/ops`);
    await ops.locator("#chaos-customer-mode").selectOption("down");
    await ops.locator("#chaos-customer-apply").click();
    await ops.locator('#service-customer [data-mode="down"]').waitFor();
    await ops.locator("#service-customer td").first().getByText("down").waitFor();
    await shoot(ops, "ops-console-customer-down");

    await shop.goto(`${base}/#/`);
    await shop.getByRole("button", { name: /^Add to cart/ }).nth(1).click();
    await openCheckout(shop);
    assert.equal(await shop.locator("#address-source").getAttribute("data-source"), "replica");
    await shop.getByRole("button", { name: "Buy" }).click();
    await shop.waitForURL(ORDER_URL);
    await shop.locator("#order-status").waitFor();
    assert.equal(await shop.locator("#order-address-source").getAttribute("data-source"), "replica");
  });

  await stepAt("in sync mode with customer down, the checkout says so instead of showing stale data", async () => {
    await ops.locator("#customer-data-sync").check();
    await ops.getByText("Ordering now takes customer data from: sync.").waitFor();
    await withExpectedErrors([{ status: 503, path: /^\/api\/ordering\/checkout\/preview$/ }], async () => {
      await shop.goto(`${base}/#/`);
      await shop.getByRole("button", { name: /^Add to cart/ }).first().click();
      await shop.goto(`${base}/#/checkout`);
      await shop.getByText("The checkout cannot show your details right now").waitFor();
      await shoot(shop, "checkout-sync-customer-down");
    });
    await ops.locator("#customer-data-replica").check();
    await ops.getByText("Ordering now takes customer data from: replica.").waitFor();
  });

  await stepAt("Change address: the order uses the address given at checkout", async () => {
    await openCheckout(shop);
    await shop.getByRole("button", { name: "Change address" }).click();
    assert.equal(await shop.getByRole("button", { name: "Change address" }).getAttribute("aria-expanded"), "true");
    await shop.getByLabel("Street and number").fill("1 Difference Engine Lane");
    await shop.getByLabel("Postal code").fill("10115");
    await shop.getByLabel("City").fill("Berlin");
    await shop.getByLabel("Country").fill("DE");
    await shoot(shop, "checkout-change-address");
    await shop.getByRole("button", { name: "Use this address" }).click();
    await shop.locator('#address-source[data-source="override"]').waitFor();
    assert.match(await shop.locator("#shipping-address").textContent(), /Difference Engine/);
    await shop.getByRole("button", { name: "Buy" }).click();
    await shop.waitForURL(ORDER_URL);
    await shop.locator('#order-address-source[data-source="override"]').waitFor();
    assert.match(await shop.locator("address").first().textContent(), /Difference Engine/);
  });

  await stepAt("payment slowed from the console: checkout fails fast with a clear message; back to ok, it works", async () => {
    await ops.locator("#chaos-customer-mode").selectOption("ok");
    await ops.locator("#chaos-customer-apply").click();
    await ops.locator('#service-customer [data-mode="ok"]').waitFor();
    await ops.locator("#chaos-payment-mode").selectOption("slow");
    await ops.locator("#chaos-payment-latency").fill("3000");
    await ops.locator("#chaos-payment-apply").click();
    await ops.locator('#service-payment [data-mode="slow"]').waitFor();
    await withExpectedErrors([{ status: 503, path: /^\/api\/ordering\/orders$/ }], async () => {
      await shop.goto(`${base}/#/`);
      await shop.getByRole("button", { name: /^Add to cart/ }).first().click();
      await openCheckout(shop);
      const started = Date.now();
      await shop.getByRole("button", { name: "Buy" }).click();
      await shop.getByText("The order could not be placed right now").waitFor();
      assert.ok(Date.now() - started < 2_500, "the checkout answered within its deadline, not after payment's 3 s");
      await shoot(shop, "checkout-payment-slow");
    });
    await ops.locator("#chaos-payment-mode").selectOption("ok");
    await ops.locator("#chaos-payment-apply").click();
    await ops.locator('#service-payment [data-mode="ok"]').waitFor();
    // The breaker may still be open for a moment: Buy again until it lets the order through.
    await withExpectedErrors([{ status: 503, path: /^\/api\/ordering\/orders$/ }], async () => {
      const deadline = Date.now() + WAIT;
      while (!ORDER_URL.test(shop.url())) {
        assert.ok(Date.now() < deadline, "checkout did not recover after payment came back");
        await shop.getByRole("button", { name: "Buy" }).click();
        await Promise.race([
          shop.waitForURL(ORDER_URL),
          shop.getByText("The order could not be placed right now").waitFor(),
        ]);
      }
    });
    await shop.locator("#order-status").waitFor();
  });

  await stepAt("inventory down: the product list degrades visibly, not into an error page", async () => {
    await ops.locator("#chaos-inventory-mode").selectOption("down");
    await ops.locator("#chaos-inventory-apply").click();
    await ops.locator('#service-inventory [data-mode="down"]').waitFor();
    await shop.goto(`${base}/?load=${Date.now()}#/`);
    await shop.getByText("Part of the shop is unavailable right now").waitFor();
    await shop.getByText("Stock unknown").first().waitFor();
    assert.match(await shop.locator("article.product .price").first().textContent(), /\d/, "prices still shown");
    await shoot(shop, "products-degraded");
    await ops.locator("#chaos-inventory-mode").selectOption("ok");
    await ops.locator("#chaos-inventory-apply").click();
    await ops.locator('#service-inventory [data-mode="ok"]').waitFor();
  });

  await stepAt("the bus can be paused and resumed from the console", async () => {
    await ops.getByRole("button", { name: "Pause the bus" }).click();
    await ops.locator("#bus-state").getByText("paused").waitFor();
    await ops.getByRole("button", { name: "Resume the bus" }).click();
    await ops.locator("#bus-state").getByText("running").waitFor();
  });

  await stepAt("keyboard: the main navigation and the Buy flow are reachable by Tab", async () => {
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
    if (phone) {
      // The menu opens from the keyboard and says so.
      await shop.keyboard.press("Tab");
      assert.equal(await shop.evaluate(() => document.activeElement.id), "menu-toggle");
      await shop.keyboard.press("Enter");
      assert.equal(await shop.locator("#menu-toggle").getAttribute("aria-expanded"), "true");
      await shop.locator("#nav").getByRole("link", { name: "Orders" }).waitFor();
      await checkPage(shop, "the products with the menu open");
      await shoot(shop, "menu");
    }
  });

  await customerContext.close();
  await adminContext.close();
}

try {
  await walk({ width: 1280, height: 800 }, "desktop");
  await walk({ width: 390, height: 844 }, "phone");
  assert.deepEqual(problems, [], "no page error, console error or unexpected HTTP error");
  console.log(`\n${steps.length} browser steps passed; screenshots in ${shots}`);
} finally {
  await browser.close();
}
