// The Agora web UI: a single-page app over the public API, nothing else.
//
// Pages are built with DOM calls (`h`) and text nodes only, never by parsing strings
// as HTML; the gateway serves this file under a CSP that forbids inline script.
// The token lives in sessionStorage (gone when the tab closes); the cart in
// localStorage.
"use strict";

// ---------------------------------------------------------------- small helpers

/** Creates an element: h("a", {href: "#/"}, "text", child, [more children]). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  if (tag === "table") labelCells(el);
  return el;
}

/**
 * Gives each cell of a table the text of its column's header (`data-label`), so that
 * on a phone, where a row becomes a stack of cells, each cell still says what it is.
 * Call again after adding rows.
 */
function labelCells(table) {
  table.classList.add("stack");
  const headers = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.children].forEach((cell, i) => {
      if (cell.tagName === "TD" && headers[i] && !cell.hasAttribute("data-label")) {
        cell.setAttribute("data-label", headers[i]);
      }
    });
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children (arrays flattened, as in `h`). */
function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

function money(cents, currency) {
  if (cents === null || cents === undefined) return "—";
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency: currency || "EUR" })
      .format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

function ago(iso) {
  if (!iso) return "unknown";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

// How a non-order id (a product, a shipment, a request) is shown: its last 8 hex
// digits, the random part of a UUIDv7. An order is named by the `reference` the API
// gives (AG-7K3Q-9D2M), derived in one place on the server and never here.
function shortId(id) {
  return String(id).replace(/-/g, "").slice(-8);
}

function addressLines(a) {
  if (!a) return "";
  return [a.line1, a.line2, `${a.postal_code} ${a.city}`, a.country].filter(Boolean).join("\n");
}

const STATUS_TONE = {
  accepted: "warn", paid: "warn", ready_for_shipping: "warn", shipped: "good", cancelled: "bad",
};

function badge(text, tone) {
  return h("span", { class: `badge ${tone || ""}` }, text);
}

function statusBadge(status) {
  return badge(status.replaceAll("_", " "), STATUS_TONE[status]);
}

const SOURCE_TEXT = {
  replica: "ordering's own copy (replica), fed by the customer service's events",
  customer_service: "asked live from the customer service",
  override: "given at checkout",
};

// ---------------------------------------------------------------- session and cart

const session = {
  get() {
    try {
      const s = JSON.parse(sessionStorage.getItem("agora.session"));
      if (s && s.exp * 1000 > Date.now()) return s;
    } catch { /* a damaged entry is no session */ }
    return null;
  },
  set(token, email) {
    // The payload is read for display only (roles, expiry); the services verify it.
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    sessionStorage.setItem("agora.session", JSON.stringify({
      token, email, roles: payload.roles || [], exp: payload.exp,
    }));
  },
  clear() { sessionStorage.removeItem("agora.session"); },
  isAdmin() { const s = this.get(); return !!s && s.roles.includes("admin"); },
};

const cart = {
  get() {
    try { return JSON.parse(localStorage.getItem("agora.cart")) || {}; } catch { return {}; }
  },
  save(items) { localStorage.setItem("agora.cart", JSON.stringify(items)); renderNav(); },
  add(productId, quantity) {
    const items = this.get();
    items[productId] = Math.min(100, (items[productId] || 0) + quantity);
    this.save(items);
  },
  set(productId, quantity) {
    const items = this.get();
    if (quantity > 0) items[productId] = Math.min(100, quantity); else delete items[productId];
    this.save(items);
  },
  clear() { this.save({}); },
  lines() {
    return Object.entries(this.get()).map(([product_id, quantity]) => ({ product_id, quantity }));
  },
  count() { return Object.values(this.get()).reduce((a, b) => a + b, 0); },
};

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** Calls the public API; answers {data, headers} or throws an ApiError. */
async function api(method, path, body, headers) {
  const s = session.get();
  const init = { method, headers: { accept: "application/json", ...(headers || {}) } };
  if (s) init.headers.authorization = `Bearer ${s.token}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { title: "The shop cannot be reached", detail: "Check the connection and try again." });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!response.ok) {
    if (response.status === 401 && s) {
      session.clear();
      renderNav();
    }
    throw new ApiError(response.status, typeof data === "object" ? data : null);
  }
  return { data, headers: response.headers };
}

/** A readable error box for an ApiError (problem+json: title, detail, field errors). */
function errorBox(error, context) {
  const problem = error.problem || {};
  const box = h("div", { class: "error", role: "alert" },
    h("strong", {}, context || problem.title || "Something went wrong"),
    problem.detail || error.message);
  if (Array.isArray(problem.errors) && problem.errors.length) {
    box.append(h("ul", {}, problem.errors.map((e) => h("li", {}, `${e.field}: ${e.message}`))));
  }
  const retry = error.status === 503 || error.status === 429;
  if (retry) box.append(h("div", { class: "hint" }, "This is temporary: try again in a moment."));
  return box;
}

/**
 * Feedback for a moment, where the person is looking: a toast at the bottom of the
 * viewport. It goes after a few seconds, when dismissed, or when the page changes —
 * unless `survive` keeps it for the page about to open (e.g. "Signed in").
 */
let toastTimer = null;
let toastSurvives = false;
function toast(message, { kind, survive } = {}) {
  const box = document.getElementById("flash");
  clearTimeout(toastTimer);
  const close = () => { clearTimeout(toastTimer); box.replaceChildren(); };
  box.replaceChildren(h("div", { class: `toast ${kind || "notice"}` },
    h("span", {}, message),
    h("button", { type: "button", "aria-label": "Dismiss", onclick: close }, "×")));
  toastSurvives = !!survive;
  toastTimer = setTimeout(close, 8000);
}
function clearToast() {
  clearTimeout(toastTimer);
  document.getElementById("flash").replaceChildren();
}

// ---------------------------------------------------------------- routing

let timers = [];
let routed = false;

/** Runs `fn` now and then every `ms` until the page changes. */
function every(ms, fn) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (error) { console.warn(error); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  let timer = setTimeout(tick, 0);
  timers.push(() => { stopped = true; clearTimeout(timer); });
}

const routes = [
  [/^\/$/, productsPage, "Products"],
  [/^\/cart$/, cartPage, "Cart"],
  [/^\/signin$/, signInPage, "Sign in"],
  [/^\/signup$/, signUpPage, "Sign up"],
  [/^\/account$/, accountPage, "Account"],
  [/^\/checkout$/, checkoutPage, "Checkout"],
  [/^\/orders$/, ordersPage, "Orders"],
  // An order by id, or by the reference a person quotes (the API takes both).
  [/^\/orders\/([0-9a-f-]{36}|AG-[0-9A-Za-z]{4}-[0-9A-Za-z]{4})$/, orderPage, "Order"],
  [/^\/mailbox$/, mailboxPage, "Mailbox"],
  [/^\/ops$/, opsPage, "Ops console"],
  [/^\/traces\/([0-9a-f]{32})$/, tracePage, "Trace"],
];

const NEEDS_SIGN_IN = new Set([accountPage, checkoutPage, ordersPage, orderPage, mailboxPage, opsPage, tracePage]);

/** The page's path: "#/…"; any other fragment (say "#main") is the product list. */
function currentPath() {
  return location.hash.startsWith("#/") ? location.hash.slice(1) : "/";
}

async function route() {
  // Only "#/…" names a page: another fragment (an in-page anchor) changes nothing.
  if (routed && location.hash && !location.hash.startsWith("#/")) return;
  for (const stop of timers) stop();
  timers = [];
  const path = currentPath();
  const main = document.getElementById("main");
  let match = null;
  let page = notFoundPage;
  let title = "Not found";
  for (const [pattern, fn, name] of routes) {
    match = path.match(pattern);
    if (match) { page = fn; title = name; break; }
  }
  renderNav();
  setMenu(false);
  // A page shows what is true now: feedback about the last page goes with it.
  if (!toastSurvives) clearToast();
  toastSurvives = false;
  document.title = `${title} · Agora shop`;
  if (NEEDS_SIGN_IN.has(page) && !session.get()) {
    sessionStorage.setItem("agora.after-sign-in", path);
    location.hash = "#/signin";
    return;
  }
  const view = h("div", {});
  main.classList.toggle("wide", page === opsPage || page === tracePage);
  main.replaceChildren(view);
  // After a navigation inside the app, focus the new page (as a page load would);
  // on the first load, leave focus where the browser puts it.
  if (routed) {
    main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  routed = true;
  try {
    await page(view, ...(match ? match.slice(1) : []));
  } catch (error) {
    view.append(errorBox(error));
  }
}

function renderNav() {
  const nav = document.getElementById("nav");
  const path = currentPath();
  const link = (href, text) =>
    h("a", { href: `#${href}`, "aria-current": path === href ? "page" : null }, text);
  const s = session.get();
  const count = cart.count();
  // The cart link lives in the header bar, outside the menu: always in view.
  const cartLink = document.getElementById("cart-link");
  cartLink.textContent = count ? `Cart (${count})` : "Cart";
  if (path === "/cart") cartLink.setAttribute("aria-current", "page");
  else cartLink.removeAttribute("aria-current");
  const items = [link("/", "Products")];
  if (s) {
    items.push(link("/orders", "Orders"), link("/mailbox", "Mailbox"), link("/account", "Account"));
    if (s.roles.includes("admin")) items.push(link("/ops", "Ops console"));
    items.push(
      h("span", { class: "who" }, s.email),
      h("button", {
        type: "button",
        onclick: async () => {
          // Revoke the token server-side first; if that fails (the shop is down, the
          // token has expired), forgetting it here still signs out of this tab.
          try { await api("DELETE", "/api/identity/token"); } catch { /* ignored */ }
          session.clear(); toast("Signed out.", { survive: true }); location.hash = "#/"; route();
        },
      }, "Sign out"),
    );
  } else {
    items.push(h("span", { class: "who" }), link("/signin", "Sign in"), link("/signup", "Sign up"));
  }
  nav.replaceChildren(...items);
}

/** Opens or closes the phone menu (the button is only shown on narrow screens). */
function setMenu(open) {
  document.getElementById("top").classList.toggle("open", open);
  document.getElementById("menu-toggle").setAttribute("aria-expanded", String(open));
}

// ---------------------------------------------------------------- pages: shop

async function productsPage(view) {
  view.append(h("h1", {}, "Products"));
  const { data: products, headers } = await api("GET", "/api/shop/products");
  const degraded = headers.get("agora-degraded");
  if (degraded) {
    view.append(h("div", { class: "warning", role: "status" },
      h("strong", {}, "Part of the shop is unavailable right now"),
      `Not answering: ${degraded}. What they provide (prices or stock) is missing below; the rest works.`));
  }
  if (!products.length) view.append(h("p", {}, "No products yet."));
  const grid = h("div", { class: "grid" });
  for (const p of products) {
    const qty = h("input", { type: "number", min: 1, max: 100, value: 1, id: `qty-${p.id}` });
    const canBuy = p.price !== null && p.available !== 0;
    grid.append(h("article", { class: "card product", "aria-labelledby": `name-${p.id}` },
      h("h2", { id: `name-${p.id}` }, p.name),
      h("p", {}, p.description),
      h("div", { class: "price" }, p.price ? money(p.price.amount_cents, p.price.currency) : "Price unavailable"),
      h("div", { class: "muted" },
        p.available === null ? "Stock unknown" : p.available > 0 ? `${p.available} in stock` : "Out of stock"),
      h("div", { class: "row" },
        h("label", { class: "inline", for: `qty-${p.id}` }, "Qty", qty),
        h("button", {
          type: "button", class: "primary", disabled: !canBuy,
          onclick: () => {
            const n = Math.max(1, Math.min(100, parseInt(qty.value, 10) || 1));
            cart.add(p.id, n);
            toast(`${n} × ${p.name} added to the cart.`);
          },
        }, "Add to cart", h("span", { class: "visually-hidden" }, `: ${p.name}`)))));
  }
  view.append(grid);
}

async function cartPage(view) {
  view.append(h("h1", {}, "Cart"));
  const lines = cart.lines();
  if (!lines.length) {
    view.append(h("p", {}, "Your cart is empty. ", h("a", { href: "#/" }, "Browse the products.")));
    return;
  }
  let products = [];
  try {
    ({ data: products } = await api("GET", "/api/shop/products"));
  } catch (error) {
    view.append(errorBox(error, "Product details are unavailable"));
  }
  const byId = Object.fromEntries(products.map((p) => [p.id, p]));
  const body = h("tbody", {});
  let total = 0;
  let currency = "EUR";
  for (const line of lines) {
    const p = byId[line.product_id];
    const price = p && p.price;
    if (price) { total += price.amount_cents * line.quantity; currency = price.currency; }
    const qty = h("input", {
      type: "number", min: 0, max: 100, value: line.quantity, id: `cart-${line.product_id}`,
      onchange: () => { cart.set(line.product_id, parseInt(qty.value, 10) || 0); route(); },
    });
    const name = p ? p.name : shortId(line.product_id);
    body.append(h("tr", {},
      h("td", {}, name),
      h("td", {}, h("label", { class: "inline", for: `cart-${line.product_id}` },
        h("span", { class: "muted" }, "Qty"), qty)),
      h("td", { class: "num" }, price ? money(price.amount_cents * line.quantity, price.currency) : "—"),
      h("td", { class: "actions" }, h("button", {
        type: "button", "aria-label": `Remove ${name}`,
        onclick: () => { cart.set(line.product_id, 0); route(); },
      }, "Remove"))));
  }
  view.append(h("div", { class: "card" },
    h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Product"), h("th", {}, "Quantity"),
        h("th", { class: "num" }, "Amount"), h("th", {}, h("span", { class: "visually-hidden" }, "Remove")))),
      body,
      h("tfoot", {}, h("tr", {}, h("td", {}, "Total (prices confirmed at checkout)"), h("td", {}),
        h("td", { class: "num" }, money(total, currency)), h("td", {})))),
    h("p", {}, session.get()
      ? h("a", { class: "button primary", href: "#/checkout" }, "Go to checkout")
      : h("a", { class: "button primary", href: "#/signin" }, "Sign in to check out"))));
}

// ---------------------------------------------------------------- pages: identity

/** A form control's value, by name (never `form.name`: that is the form's own name). */
function value(form, name) {
  return form.elements.namedItem(name).value;
}

function field(label, attrs, hint) {
  const input = h("input", attrs);
  return h("label", {}, label, input, hint ? h("span", { class: "hint" }, hint) : null);
}

async function signInPage(view) {
  view.append(h("h1", {}, "Sign in"));
  const errors = h("div", {});
  const form = h("form", { class: "stack card", novalidate: true },
    field("Email", { type: "email", name: "email", autocomplete: "username", required: true }),
    field("Password", { type: "password", name: "password", autocomplete: "current-password", required: true }),
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Sign in"),
      h("span", {}, "No account yet? ", h("a", { href: "#/signup" }, "Sign up"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = value(form, "email").trim();
    try {
      const { data } = await api("POST", "/api/identity/token", { email, password: value(form, "password") });
      session.set(data.access_token, email);
      const next = sessionStorage.getItem("agora.after-sign-in") || "/";
      sessionStorage.removeItem("agora.after-sign-in");
      toast(`Signed in as ${email}.`, { survive: true });
      location.hash = `#${next}`;
    } catch (error) {
      errors.replaceChildren(errorBox(error, error.status === 401 ? "Wrong email or password" : null));
    }
  });
  view.append(errors, form);
}

async function signUpPage(view) {
  view.append(h("h1", {}, "Create an account"));
  const errors = h("div", {});
  const form = h("form", { class: "stack card", novalidate: true },
    field("Name", { type: "text", name: "name", autocomplete: "name", required: true }),
    field("Email", { type: "email", name: "email", autocomplete: "email", required: true }),
    field("Password", { type: "password", name: "password", autocomplete: "new-password", required: true, minlength: 10 },
      "At least 10 characters."),
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Sign up"),
      h("span", {}, "Have an account? ", h("a", { href: "#/signin" }, "Sign in"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: value(form, "name").trim(), email: value(form, "email").trim(), password: value(form, "password") };
    try {
      await api("POST", "/api/identity/users", body);
      const { data } = await api("POST", "/api/identity/token", { email: body.email, password: body.password });
      session.set(data.access_token, body.email);
      location.hash = "#/account";
    } catch (error) {
      errors.replaceChildren(errorBox(error, error.status === 409 ? "This email is taken" : null));
    }
  });
  view.append(errors, form);
}

/**
 * An address form. `onSubmit(body)` may answer the saved address (as the server
 * normalised it), which the form then shows; `onCancel`, when given, adds Cancel.
 */
function addressForm(address, submitText, onSubmit, onCancel) {
  const a = address || {};
  const errors = h("div", {});
  const form = h("form", { class: "stack", novalidate: true },
    field("Street and number", { name: "line1", autocomplete: "address-line1", required: true, value: a.line1 || "" }),
    field("Address line 2 (optional)", { name: "line2", autocomplete: "address-line2", value: a.line2 || "" }),
    field("Postal code", { name: "postal_code", autocomplete: "postal-code", required: true, value: a.postal_code || "" }),
    field("City", { name: "city", autocomplete: "address-level2", required: true, value: a.city || "" }),
    field("Country", { name: "country", autocomplete: "country", required: true, maxlength: 2, value: a.country || "" },
      "Two-letter code, e.g. DE, GB, FR."),
    errors,
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, submitText),
      onCancel ? h("button", { type: "button", onclick: onCancel }, "Cancel") : null));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      line1: value(form, "line1").trim(),
      city: value(form, "city").trim(),
      postal_code: value(form, "postal_code").trim(),
      country: value(form, "country").trim().toUpperCase(),
    };
    if (value(form, "line2").trim()) body.line2 = value(form, "line2").trim();
    try {
      errors.replaceChildren();
      const saved = await onSubmit(body);
      if (saved) {
        for (const name of ["line1", "line2", "postal_code", "city", "country"]) {
          form.elements.namedItem(name).value = saved[name] || "";
        }
      }
    } catch (error) {
      errors.replaceChildren(errorBox(error));
    }
  });
  return form;
}

async function accountPage(view) {
  view.append(h("h1", {}, "Your account"));
  const { data: me } = await api("GET", "/api/customers/me");
  view.append(h("p", { class: "muted" }, me.name ? `${me.name} · ${me.email}` : session.get().email));
  // What is missing to check out, as of now: it goes once both are saved.
  let hasAddress = !!me.address;
  let hasPayment = !!me.payment_method;
  const missing = h("div", { id: "account-missing" });
  const showMissing = () => {
    const needed = [hasAddress ? null : "a shipping address", hasPayment ? null : "a payment method"].filter(Boolean);
    missing.replaceChildren(needed.length
      ? h("div", { class: "notice" }, `To check out, add ${needed.join(" and ")}.`) : "");
  };
  showMissing();
  const addressCard = h("section", { class: "card", "aria-labelledby": "address-h" },
    h("h2", { id: "address-h" }, "Shipping address"),
    h("p", { class: "muted" }, "Kept by the customer service; ordering learns of changes through events."),
    addressForm(me.address, "Save address", async (body) => {
      const { data } = await api("PUT", "/api/customers/me/address", body);
      hasAddress = true;
      showMissing();
      toast("Address saved.");
      return data.address;
    }));
  const paymentErrors = h("div", {});
  const pm = me.payment_method;
  const payment = h("form", { class: "stack", novalidate: true },
    h("label", {}, "Card (demo provider token)",
      h("select", { name: "token" },
        h("option", { value: "tok_visa", selected: !pm || pm.token === "tok_visa" }, "Visa — approves (tok_visa)"),
        h("option", { value: "tok_declined", selected: pm && pm.token === "tok_declined" }, "Declined card (tok_declined)"))),
    field("Last four digits", { name: "last4", inputmode: "numeric", pattern: "[0-9]{4}", maxlength: 4, required: true, value: pm ? pm.last4 : "4242" }),
    paymentErrors,
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Save payment method")));
  payment.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      paymentErrors.replaceChildren();
      const { data } = await api("PUT", "/api/customers/me/payment-method", { token: value(payment, "token"), last4: value(payment, "last4").trim() });
      if (data.payment_method) {
        payment.elements.namedItem("token").value = data.payment_method.token;
        payment.elements.namedItem("last4").value = data.payment_method.last4;
      }
      hasPayment = true;
      showMissing();
      toast("Payment method saved.");
    } catch (error) {
      paymentErrors.replaceChildren(errorBox(error));
    }
  });
  view.append(missing, h("div", { class: "split" }, addressCard,
    h("section", { class: "card", "aria-labelledby": "payment-h" },
      h("h2", { id: "payment-h" }, "Payment method"),
      h("p", { class: "muted" }, "A payment provider's token, never a card number."),
      payment)));
}

// ---------------------------------------------------------------- pages: checkout

async function checkoutPage(view) {
  view.append(h("h1", {}, "Checkout"));
  const lines = cart.lines();
  if (!lines.length) {
    view.append(h("p", {}, "Your cart is empty. ", h("a", { href: "#/" }, "Browse the products.")));
    return;
  }
  let override = null; // an address given here, for this order only
  let idempotencyKey = null; // kept until the shop answers, so a retry is the same order
  const body = h("div", {});
  view.append(body);

  async function render() {
    let preview;
    try {
      ({ data: preview } = await api("POST", "/api/ordering/checkout/preview", { lines }));
    } catch (error) {
      body.replaceChildren(
        errorBox(error, "The checkout cannot show your details right now"),
        h("button", { type: "button", onclick: render }, "Try again"));
      return;
    }
    const address = override || preview.shipping_address;
    const source = override ? "override" : preview.address_source;
    const addressSection = h("section", { class: "card", "aria-labelledby": "ship-h" },
      h("h2", { id: "ship-h" }, "Shipping address"));
    const changeArea = h("div", {});
    if (address) {
      addressSection.append(
        h("address", { id: "shipping-address" }, addressLines(address)),
        h("p", { class: "source", id: "address-source", "data-source": source },
          h("strong", {}, "Source: "), SOURCE_TEXT[source] || source,
          !override && preview.address_as_of ? ` · last changed ${ago(preview.address_as_of)}` : ""),
        h("div", { class: "row" },
          h("button", {
            type: "button", "aria-expanded": "false", "aria-controls": "change-address", id: "change-address-toggle",
            onclick: (event) => {
              const toggle = event.currentTarget;
              const close = () => {
                changeArea.replaceChildren();
                toggle.setAttribute("aria-expanded", "false");
                toggle.focus();
              };
              if (toggle.getAttribute("aria-expanded") === "true") { close(); return; }
              toggle.setAttribute("aria-expanded", "true");
              changeArea.replaceChildren(addressForm(address, "Use this address", async (a) => {
                override = a;
                await render();
              }, close));
              changeArea.querySelector("input").focus();
            },
          }, "Change address"),
          override ? h("button", { type: "button", onclick: () => { override = null; render(); } },
            "Use my saved address") : null),
        h("div", { id: "change-address" }, changeArea));
    } else {
      addressSection.append(
        h("p", {}, "No address is known yet. Enter one for this order (or save one in ",
          h("a", { href: "#/account" }, "your account"), ")."),
        addressForm(null, "Use this address", async (a) => { override = a; await render(); }));
    }

    const payment = h("section", { class: "card", "aria-labelledby": "pay-h" },
      h("h2", { id: "pay-h" }, "Payment method"),
      preview.payment_method
        ? h("p", {}, `Card ending in ${preview.payment_method.last4}`)
        : h("p", {}, "None yet. ", h("a", { href: "#/account" }, "Add a payment method"), "."));

    const rows = preview.lines.map((l) => h("tr", {},
      h("td", {}, l.name || shortId(l.product_id)),
      h("td", { class: "num" }, l.quantity),
      h("td", { class: "num" }, money(l.unit_price_cents, preview.currency)),
      h("td", { class: "num" }, money(l.line_total_cents, preview.currency))));
    const summary = h("section", { class: "card", "aria-labelledby": "cart-h" },
      h("h2", { id: "cart-h" }, "Your order"),
      h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Product"), h("th", { class: "num" }, "Qty"),
          h("th", { class: "num" }, "Unit price"), h("th", { class: "num" }, "Amount"))),
        h("tbody", {}, rows),
        h("tfoot", {}, h("tr", {}, h("td", {}, "Total"), h("td", {}), h("td", {}),
          h("td", { class: "num", id: "total" }, money(preview.total_cents, preview.currency))))));

    const result = h("div", { role: "status", "aria-live": "polite" });
    const buy = h("button", {
      type: "button", class: "primary buy", disabled: !address || !preview.payment_method,
      onclick: async () => {
        buy.disabled = true;
        result.replaceChildren(h("p", { class: "muted" }, "Placing your order…"));
        idempotencyKey = idempotencyKey || crypto.randomUUID();
        const order = { lines };
        if (override) order.shipping_address = override;
        try {
          const { data } = await api("POST", "/api/ordering/orders", order, { "idempotency-key": idempotencyKey });
          cart.clear();
          // The order page shows where the order is now; no message to outlive it.
          location.hash = `#/orders/${data.id}`;
        } catch (error) {
          // An answer (not a lost connection) settles this attempt: a new click is a new order.
          if (error.status !== 0) idempotencyKey = null;
          const titles = { 402: "Payment declined", 503: "The order could not be placed right now" };
          result.replaceChildren(errorBox(error, titles[error.status]));
          buy.disabled = false;
        }
      },
    }, "Buy");
    body.replaceChildren(h("div", { class: "split" }, addressSection, payment), summary,
      h("div", { class: "row" }, buy, h("span", { class: "muted" },
        "Prices and payment are confirmed live; the address may come from a replica.")), result);
  }
  await render();
}

// ---------------------------------------------------------------- pages: orders

async function ordersPage(view) {
  view.append(h("h1", {}, "Your orders"));
  const { data: orders } = await api("GET", "/api/ordering/orders");
  if (!orders.length) {
    view.append(h("p", {}, "No orders yet. ", h("a", { href: "#/" }, "Browse the products.")));
    return;
  }
  view.append(h("div", { class: "card" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Order"), h("th", {}, "Placed"), h("th", {}, "Status"),
      h("th", { class: "num" }, "Total"))),
    h("tbody", {}, orders.map((o) => h("tr", {},
      h("td", {}, h("a", { href: `#/orders/${o.id}`, class: "order-ref" }, o.reference)),
      h("td", {}, o.history.length ? when(o.history[0].at) : ""),
      h("td", {}, statusBadge(o.status)),
      h("td", { class: "num" }, money(o.total_cents, o.currency))))))));
}


async function orderPage(view, idOrReference) {
  const heading = h("h1", {}, "Order");
  const content = h("div", {});
  view.append(heading, content);
  let last = "";
  let settled = 0; // polls since the order reached a terminal state (late events still arrive)
  every(1000, async () => {
    if (settled > 5) return;
    const { data: order } = await api("GET", `/api/ordering/orders/${encodeURIComponent(idOrReference)}`);
    const id = order.id;
    heading.textContent = `Order ${order.reference}`;
    document.title = `Order ${order.reference} · Agora shop`;
    let shipments = [];
    try { ({ data: shipments } = await api("GET", `/api/shipping/shipments?order_id=${id}`)); } catch { /* shown when it answers */ }
    let events = null;
    let traces = null;
    if (session.isAdmin()) {
      try { ({ data: events } = await api("GET", `/api/ops/events?correlation_id=${id}&limit=100`)); } catch { /* optional */ }
      try { ({ data: traces } = await api("GET", `/api/ops/traces?correlation_id=${id}`)); } catch { /* kept by `agora up` only */ }
    }
    if (order.settled) settled += 1;
    const key = JSON.stringify([order, shipments, events, traces]);
    if (key === last) return;
    last = key;
    fill(content, renderOrder(order, shipments, events, traces));
  });
}

/** The way an order goes, in order; `cancelled` may end it at any point. */
const STEPS = [
  ["accepted", "Accepted"], ["paid", "Paid"], ["ready_for_shipping", "Ready"], ["shipped", "Shipped"],
];

/**
 * The order's history as steps, each done one with its time: a fast pipeline (shipped
 * before the page first showed) still shows the way it went.
 */
function orderSteps(order) {
  const at = Object.fromEntries(order.history.map((step) => [step.status, step]));
  const cancelled = at.cancelled;
  const current = order.status;
  const items = [];
  for (const [status, name] of STEPS) {
    const done = at[status];
    if (cancelled && !done) continue;
    items.push(h("li", {
      class: done ? "done" : "pending", "data-step": status, "data-done": done ? "true" : "false",
      "aria-current": current === status ? "step" : null,
    },
    h("span", { class: "dot", "aria-hidden": "true" }),
    h("span", { class: "step-name" }, name),
    done ? h("time", { datetime: done.at }, when(done.at))
      : h("span", {}, h("span", { class: "visually-hidden" }, "not yet, "), "waiting")));
  }
  if (cancelled) {
    items.push(h("li", { class: "cancelled", "data-step": "cancelled", "data-done": "true", "aria-current": "step" },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("span", { class: "step-name" }, "Cancelled"),
      h("time", { datetime: cancelled.at }, when(cancelled.at)),
      cancelled.reason ? ` — ${cancelled.reason.replaceAll("_", " ")}` : ""));
  }
  return h("ol", { class: "steps", id: "order-history" }, items);
}

function renderOrder(order, shipments, events, traces) {
  const cancelled = order.history.find((s) => s.status === "cancelled");
  const parts = [
    h("p", { class: "row" }, h("span", { id: "order-status", "data-status": order.status }, statusBadge(order.status)),
      order.settled ? "" : h("span", { class: "muted" }, "updating live…"),
      cancelled && cancelled.reason ? h("span", {}, `Reason: ${cancelled.reason.replaceAll("_", " ")}`) : ""),
    h("div", { class: "split" },
      h("section", { class: "card", "aria-labelledby": "o-ship" },
        h("h2", { id: "o-ship" }, "Shipping to"),
        h("address", {}, addressLines(order.shipping_address)),
        h("p", { class: "source", id: "order-address-source", "data-source": order.address_source },
          h("strong", {}, "Address source: "), SOURCE_TEXT[order.address_source] || order.address_source),
        shipments.map((s) => h("p", {}, `Shipment ${shortId(s.id)}: ${s.status}`,
          s.dispatched_at ? `, dispatched ${when(s.dispatched_at)}` : ""))),
      h("section", { class: "card", "aria-labelledby": "o-hist" },
        h("h2", { id: "o-hist" }, "Progress"),
        orderSteps(order))),
    h("section", { class: "card", "aria-labelledby": "o-lines" },
      h("h2", { id: "o-lines" }, "Lines"),
      h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Product"), h("th", { class: "num" }, "Qty"),
          h("th", { class: "num" }, "Amount"))),
        h("tbody", {}, order.lines.map((l) => h("tr", {}, h("td", {}, l.name || shortId(l.product_id)),
          h("td", { class: "num" }, l.quantity), h("td", { class: "num" }, money(l.line_total_cents, order.currency))))),
        h("tfoot", {}, h("tr", {}, h("td", {}, "Total"), h("td", {}),
          h("td", { class: "num" }, money(order.total_cents, order.currency)))))),
  ];
  if (events) parts.push(eventTimeline(events, traces));
  return parts;
}

/** The events about one flow, oldest first, each with what caused it; then its traces. */
function eventTimeline(events, traces) {
  const typeOf = Object.fromEntries(events.map((e) => [e.id, e.type]));
  return h("section", { class: "card", "aria-labelledby": "o-events" },
    h("h2", { id: "o-events" }, "Event timeline (admin)"),
    traces && traces.length ? h("div", { id: "order-traces" },
      h("h3", {}, "Traces"),
      h("ul", {}, traces.map((t, i) => h("li", {},
        h("a", { href: `#/traces/${t.trace_id}`, "data-trace": t.trace_id },
          i === 0 ? "Waterfall of the checkout's trace" : `Waterfall of trace …${t.trace_id.slice(-8)}`),
        h("span", { class: "muted" }, ` — ${t.root}, ${t.spans} spans, ${when(t.start)}`))))) : "",
    events.length ? h("table", { id: "event-timeline" },
      h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Event"), h("th", {}, "From"),
        h("th", {}, "Caused by"))),
      h("tbody", {}, events.map((e) => h("tr", {},
        h("td", { class: "mono" }, new Date(e.time).toLocaleTimeString()),
        h("td", {}, e.type), h("td", {}, e.source),
        h("td", { class: "muted" }, e.causation_id ? (typeOf[e.causation_id] || `request ${shortId(e.causation_id)}`) : "")))))
      : h("p", { class: "muted" }, "No events recorded yet."));
}

// ---------------------------------------------------------------- page: a trace

/** Colours of the services' bars, in the order they appear in a trace. */
const SERVICE_COLOURS = [
  "#1f4e79", "#1a7f37", "#8250df", "#9a6700", "#cf222e",
  "#0969da", "#bf3989", "#953800", "#116329", "#6e7781",
];

const KIND_TEXT = {
  server: "request", client: "call", producer: "event", consumer: "delivery", internal: "work",
};

function ms(micros) {
  const value = micros / 1000;
  return `${value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : Math.round(value)} ms`;
}

/**
 * The spans in tree order (each after its parent, siblings by start), with their depth
 * and, for a delivery (or the relay's send) whose parent is an event's creation, the
 * time the message spent between the two: the bus hop.
 */
function treeOrder(spans) {
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    if (span.parent_span_id && byId.has(span.parent_span_id)) {
      if (!children.has(span.parent_span_id)) children.set(span.parent_span_id, []);
      children.get(span.parent_span_id).push(span);
    } else {
      roots.push(span);
    }
  }
  const rows = [];
  const visit = (span, depth) => {
    const parent = byId.get(span.parent_span_id);
    const hop = parent && parent.kind === "producer"
      ? Math.max(0, span.start_offset_us - (parent.start_offset_us + parent.duration_us)) : null;
    rows.push({ span, depth, hop, hopFrom: parent ? parent.start_offset_us + parent.duration_us : 0 });
    for (const child of (children.get(span.span_id) || []).sort((a, b) => a.start_offset_us - b.start_offset_us)) {
      visit(child, depth + 1);
    }
  };
  roots.sort((a, b) => a.start_offset_us - b.start_offset_us).forEach((root) => visit(root, 0));
  return rows;
}

function waterfall(trace) {
  const total = Math.max(trace.duration_us, 1);
  const colour = Object.fromEntries(trace.services.map((s, i) => [s, SERVICE_COLOURS[i % SERVICE_COLOURS.length]]));
  const percent = (micros) => `${Math.min(100, (micros / total) * 100).toFixed(3)}%`;
  const swatch = (service) => {
    const el = h("span", { class: "swatch", "aria-hidden": "true" });
    el.style.setProperty("background", colour[service]);
    return el;
  };
  const rows = treeOrder(trace.spans).map(({ span, depth, hop, hopFrom }) => {
    const track = h("div", { class: "track", "aria-hidden": "true" });
    if (hop !== null && hop > 0) {
      const gap = h("div", { class: "hop", title: `${ms(hop)} between the event and this` });
      gap.style.setProperty("left", percent(hopFrom));
      gap.style.setProperty("width", percent(hop));
      track.append(gap);
    }
    const bar = h("div", { class: `bar${span.error ? " failed" : ""}` });
    bar.style.setProperty("left", percent(span.start_offset_us));
    bar.style.setProperty("width", percent(span.duration_us));
    bar.style.setProperty("background", colour[span.service]);
    track.append(bar);
    const operation = h("td", { class: "operation" },
      h("span", { class: "op-name" }, span.name),
      " ", h("span", { class: `kind ${span.kind}` }, KIND_TEXT[span.kind] || span.kind),
      span.error ? [" ", badge("failed", "bad")] : "",
      hop !== null && span.kind === "consumer" ? h("span", { class: "muted hop-note" }, ` after ${ms(hop)} on the bus`) : "");
    operation.style.setProperty("--depth", String(Math.min(depth, 12)));
    return h("tr", { "data-service": span.service, "data-kind": span.kind, "data-span": span.span_id },
      h("td", { class: "service" }, swatch(span.service), span.service),
      operation,
      h("td", { class: "num" }, `+${ms(span.start_offset_us)}`),
      h("td", { class: "num" }, ms(span.duration_us)),
      h("td", { class: "bars" }, track));
  });
  return [
    h("p", {}, `${trace.spans.length} spans in ${trace.services.length} services, ${ms(trace.duration_us)} from the first span's start to the last one's end, `,
      h("time", { datetime: trace.start }, when(trace.start)), ". Trace id ", h("code", {}, trace.trace_id), "."),
    h("p", { class: "muted" }, "Each bar is one span at its start and for its duration; a dashed stretch before a delivery is the time its event spent between being written and being handled (commit, relay, bus)."),
    h("ul", { class: "legend", "aria-label": "Services" }, trace.services.map((s) => h("li", {}, swatch(s), s))),
    h("div", { class: "card waterfall-card" },
      h("table", { id: "trace-waterfall", class: "waterfall" },
        h("caption", { class: "visually-hidden" }, "The trace's spans, each under the one that caused it"),
        h("thead", {}, h("tr", {}, h("th", {}, "Service"), h("th", {}, "Operation"),
          h("th", { class: "num" }, "Start"), h("th", { class: "num" }, "Duration"), h("th", { class: "bars" }, "Timeline"))),
        h("tbody", {}, rows))),
  ];
}

async function tracePage(view, traceId) {
  view.append(h("h1", {}, `Trace …${traceId.slice(-8)}`));
  const { data: trace } = await api("GET", `/api/ops/traces/${traceId}`);
  append(view, waterfall(trace));
}

/** A message's text as written: blank lines part paragraphs, newlines break lines. */
function mailBody(text) {
  const paragraphs = String(text || "").split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean);
  return h("div", { class: "mail-body" }, paragraphs.map((p) => h("p", {},
    p.split("\n").map((line, i) => (i ? [h("br", {}), line] : line)))));
}

async function mailboxPage(view) {
  view.append(h("h1", {}, "Mailbox"));
  const list = h("div", { id: "mailbox" });
  view.append(list);
  let last = "";
  every(2000, async () => {
    const { data: messages } = await api("GET", "/api/notifications/me");
    const key = JSON.stringify(messages);
    if (key === last) return;
    last = key;
    fill(list, messages.length ? messages.map((m) => h("article", { class: "card" },
      h("h2", {}, m.subject),
      h("p", { class: "muted" }, `${m.kind.replaceAll("_", " ")} · ${when(m.sent_at)}`,
        m.order_id ? [" · ", h("a", { href: `#/orders/${m.order_id}` }, `order ${m.order_reference || shortId(m.order_id)}`)] : ""),
      mailBody(m.body))) : h("p", {}, "No messages yet."));
  });
}

// ---------------------------------------------------------------- page: ops console

async function opsPage(view) {
  view.append(h("h1", {}, "Ops console"));
  if (!session.isAdmin()) {
    view.append(h("div", { class: "error", role: "alert" }, h("strong", {}, "Admins only"),
      "Sign in as an admin (admin@agora.local) to see the console."));
    return;
  }
  const message = h("div", { role: "status", "aria-live": "polite" });
  // A poll answered with what was true before the user's last change must not undo
  // the change on screen: the levers show the server's state only when no change is
  // in flight and none started since that poll asked.
  const changes = { started: 0, inFlight: 0 };
  const act = async (what, fn) => {
    changes.started += 1;
    changes.inFlight += 1;
    let done = false;
    try {
      await fn();
      done = true;
      message.replaceChildren(h("div", { class: "notice" }, what));
    } catch (error) {
      message.replaceChildren(errorBox(error));
    } finally {
      changes.inFlight -= 1;
    }
    if (done) await refreshStatus().catch((error) => message.replaceChildren(errorBox(error)));
  };

  // The levers: built once, so a poll never resets what the user is choosing.
  const online = h("span", { class: "big", id: "online-users" }, "–");
  const busState = h("span", { id: "bus-state" }, "");
  const busButton = h("button", { type: "button", id: "bus-toggle" }, "Pause the bus");
  let busPaused = false;
  busButton.addEventListener("click", () => act(busPaused ? "Bus resumed." : "Bus paused.",
    () => api("PUT", "/api/ops/bus", { paused: !busPaused })));
  const modeRadios = ["replica", "sync"].map((mode) => h("label", { class: "inline" },
    h("input", {
      type: "radio", name: "customer-data", value: mode, id: `customer-data-${mode}`,
      onchange: () => act(`Ordering now takes customer data from: ${mode}.`,
        () => api("PUT", "/api/ops/settings", { customer_data: mode })),
    }),
    mode === "replica" ? "replica (its own copy, via events)" : "sync (call the customer service live)"));
  view.append(message, h("div", { class: "card switches" },
    h("div", {}, h("div", { class: "muted" }, "Online users"), online),
    h("fieldset", {}, h("legend", {}, "Ordering's customer data"), ...modeRadios),
    h("fieldset", {}, h("legend", {}, "The bus"), h("div", { class: "row" }, busState, busButton))));

  const serviceRows = h("tbody", {});
  const rows = new Map();
  view.append(h("section", { class: "card", "aria-labelledby": "svc-h" },
    h("h2", { id: "svc-h" }, "Services"),
    h("table", { id: "services" },
      h("thead", {}, h("tr", {}, h("th", {}, "Service"), h("th", {}, "Health"), h("th", {}, "Chaos now"),
        h("th", {}, "Breakers (its outgoing calls)"), h("th", {}, "Inject a fault"))),
      serviceRows)));

  function chaosForm(name) {
    const id = (what) => `chaos-${name}-${what}`;
    const mode = h("select", { id: id("mode"), name: "mode" },
      ["ok", "down", "slow", "flaky"].map((m) => h("option", { value: m }, m)));
    const latency = h("input", { id: id("latency"), type: "number", min: 1, max: 60000, value: 500 });
    const rate = h("input", { id: id("rate"), type: "number", min: 0, max: 1, step: 0.05, value: 0.5 });
    const form = h("form", { class: "chaos-form", "aria-label": `Chaos for ${name}` },
      h("label", { class: "inline", for: id("mode") }, h("span", { class: "muted" }, "Mode"), mode),
      h("label", { class: "inline", for: id("latency") }, h("span", { class: "muted" }, "ms"), latency),
      h("label", { class: "inline", for: id("rate") }, h("span", { class: "muted" }, "error rate"), rate),
      h("button", { type: "submit", id: id("apply") }, "Apply"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const chaos = { mode: mode.value };
      if (mode.value === "slow") chaos.latency_ms = parseInt(latency.value, 10);
      if (mode.value === "flaky") chaos.error_rate = parseFloat(rate.value);
      act(`${name}: chaos ${mode.value}.`, () => api("PUT", `/api/ops/chaos/${name}`, chaos));
    });
    return form;
  }

  const subscriptions = h("div", {});
  const deadLetters = h("div", {});
  // A scrolling region is reachable by keyboard (it may hold no link to tab to).
  const stream = h("div", { class: "stream", tabindex: 0, role: "region", "aria-label": "Live events" });
  view.append(
    h("section", { class: "card", "aria-labelledby": "dl-h" }, h("h2", { id: "dl-h" }, "Dead letters"), deadLetters),
    h("div", { class: "split" },
      h("section", { class: "card", "aria-labelledby": "ev-h" }, h("h2", { id: "ev-h" }, "Live events (newest first)"), stream),
      h("section", { class: "card", "aria-labelledby": "sub-h" },
        h("h2", { id: "sub-h" }, "Subscriptions"),
        h("p", { class: "muted" }, "Each service's durable consumers: messages waiting, redelivered, dead-lettered."),
        subscriptions)));

  let lastSubs = "";
  async function refreshStatus() {
    const asked = changes.started;
    const { data: status } = await api("GET", "/api/ops/status");
    online.textContent = String(status.online_users);
    if (changes.inFlight === 0 && asked === changes.started) {
      busPaused = status.bus.paused;
      busState.replaceChildren(busPaused ? badge("paused", "bad") : badge("running", "good"));
      busButton.textContent = busPaused ? "Resume the bus" : "Pause the bus";
      for (const radio of modeRadios.map((l) => l.querySelector("input"))) {
        radio.checked = radio.value === status.settings.customer_data;
      }
    }
    for (const service of status.services) {
      let row = rows.get(service.name);
      if (!row) {
        row = {
          health: h("td", {}), chaos: h("td", {}), breakers: h("td", {}),
        };
        const controls = service.name === "gateway" ? h("td", { class: "muted" }, "—") : h("td", {}, chaosForm(service.name));
        serviceRows.append(h("tr", { id: `service-${service.name}` }, h("th", { scope: "row" }, service.name),
          row.health, row.chaos, row.breakers, controls));
        rows.set(service.name, row);
      }
      labelCells(serviceRows.closest("table"));
      row.health.replaceChildren(service.healthy ? badge("up", "good") : badge("down", "bad"));
      const c = service.chaos;
      row.chaos.replaceChildren(c.mode === "ok" ? badge("ok")
        : badge(c.mode + (c.latency_ms ? ` ${c.latency_ms} ms` : "") + (c.error_rate !== undefined ? ` ${c.error_rate}` : ""), "warn"));
      row.chaos.dataset.mode = c.mode;
      row.breakers.replaceChildren(...(service.breakers.length ? service.breakers.map((b) => h("div", {},
        `→ ${b.target} `, badge(b.state.replace("_", "-"), b.state === "closed" ? "good" : "bad"))) : [h("span", { class: "muted" }, "none")]));
    }
    const key = JSON.stringify(status.subscriptions);
    if (key !== lastSubs) {
      lastSubs = key;
      subscriptions.replaceChildren(h("table", { id: "subscriptions" },
        h("thead", {}, h("tr", {}, h("th", {}, "Consumer"), h("th", { class: "num" }, "Pending"),
          h("th", { class: "num" }, "Redelivered"), h("th", { class: "num" }, "Dead letters"))),
        h("tbody", {}, status.subscriptions.slice().sort((a, b) => a.consumer.localeCompare(b.consumer)).map((s) => h("tr", {},
          h("td", { class: "mono" }, s.consumer),
          h("td", { class: "num" }, s.pending), h("td", { class: "num" }, s.redelivered),
          h("td", { class: "num" }, s.dead_letters))))));
    }
  }

  let lastLetters = "";
  async function refreshDeadLetters() {
    const { data: letters } = await api("GET", "/api/ops/dead-letters");
    const key = JSON.stringify(letters);
    if (key === lastLetters) return;
    lastLetters = key;
    deadLetters.replaceChildren(letters.length ? h("table", { id: "dead-letters" },
      h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Consumer"), h("th", {}, "Event"),
        h("th", {}, "Reason"), h("th", { class: "num" }, "Deliveries"), h("th", {}, ""))),
      h("tbody", {}, letters.map((l) => h("tr", {},
        h("td", {}, when(l.time)), h("td", { class: "mono" }, l.consumer), h("td", {}, l.type || l.subject),
        h("td", {}, l.reason), h("td", { class: "num" }, l.deliveries),
        h("td", {}, h("button", {
          type: "button", "aria-label": `Redrive dead letter ${l.id}`,
          onclick: () => act(`Dead letter ${l.id} published again.`, async () => {
            await api("POST", `/api/ops/dead-letters/${l.id}/redrive`);
            lastLetters = "";
            await refreshDeadLetters();
          }),
        }, "Redrive"))))))
      : h("p", { class: "muted" }, "None: every message was handled."));
  }

  let lastEvents = "";
  async function refreshEvents() {
    const { data: events } = await api("GET", "/api/ops/events?limit=30");
    const key = events.length ? events[events.length - 1].id + events.length : "";
    if (key === lastEvents) return;
    lastEvents = key;
    stream.replaceChildren(events.length ? h("table", { id: "live-events" },
      h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Event"), h("th", {}, "From"), h("th", {}, "About"))),
      h("tbody", {}, events.slice().reverse().map((e) => h("tr", {},
        h("td", { class: "mono" }, new Date(e.time).toLocaleTimeString()),
        h("td", {}, e.type), h("td", {}, e.source),
        h("td", { class: "mono" }, ORDER_EVENTS.has(e.type)
          ? h("a", { href: `#/orders/${e.correlation_id}` }, `order id …${shortId(e.correlation_id)}`)
          : shortId(e.correlation_id))))))
      : h("p", { class: "muted" }, "No events yet."));
  }

  every(1500, refreshStatus);
  every(2000, refreshDeadLetters);
  every(1000, refreshEvents);
}

/** The events whose correlation id is an order's id (the order flow). */
const ORDER_EVENTS = new Set([
  "OrderAccepted", "OrderCancelled", "OrderShipped", "PaymentAuthorized", "CustomerBilled",
  "PaymentRefunded", "AuthorizationVoided", "PaymentFailed", "StockReserved",
  "StockReservationFailed", "StockReleased", "OrderReadyForShipping", "FulfilmentFailed",
  "ShipmentDispatched",
]);

async function notFoundPage(view) {
  view.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the products.")));
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  // The skip link moves focus to the page; it must not change the route ("#main").
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    const main = document.getElementById("main");
    main.focus();
    main.scrollIntoView();
  });
  document.getElementById("menu-toggle").addEventListener("click", () => {
    setMenu(document.getElementById("menu-toggle").getAttribute("aria-expanded") !== "true");
  });
  route();
});
