// lookalike's page: plain JavaScript over the REST API, no build step.
"use strict";

const PAGE_SIZE = 24;
const KEY_STORAGE = "lookalike-api-key"; // kept for this tab only (sessionStorage), sent on writes
const state = { status: null, photo: null, browseOffset: 0 };
const $ = (id) => document.getElementById(id);

// -- small helpers
function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    error.kind = body && body.error ? body.error.type : null;
    throw error;
  }
  return body;
}

// -- writes: allowed or not, and the API key when the server needs one
function writes() {
  const server = state.status && state.status.server;
  return (server && server.writes) || { enabled: false, key_required: false };
}

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage refused (private mode): the key is asked for again
  }
  renderWrites();
}

async function write(path, options) {
  const headers = new Headers(options.headers || {});
  if (writes().key_required) {
    const key = storedKey();
    if (!key) {
      renderWrites();
      throw new Error("this server needs its API key to add or remove images: type it in the key field");
    }
    headers.set("Authorization", `Bearer ${key}`);
  }
  try {
    return await api(path, { ...options, headers });
  } catch (error) {
    if (error.status === 401 || error.kind === "forbidden") storeKey(""); // wrong key: ask again
    throw error;
  }
}

function renderWrites() {
  const { enabled, key_required: keyRequired } = writes();
  $("add-form").hidden = !enabled;
  document.body.classList.toggle("read-only", !enabled);
  const note = $("writes-note");
  note.hidden = enabled && !keyRequired;
  if (!enabled) note.textContent = "Adding and removing images is off on this server (start it with --allow-writes).";
  else if (keyRequired) note.textContent = storedKey() ? "API key set for this tab." : "This server needs its API key to add or remove images.";
  $("key-form").hidden = !(enabled && keyRequired);
  $("forget-key").hidden = !storedKey();
}

function showError(error) {
  const box = $("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function fmt(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : String(value);
}

// -- status and categories
async function loadStatus() {
  const status = await api("/api/status");
  state.status = status;
  const index = status.index;
  const server = status.server;
  const parts = [`${index.images} images`, `${Object.keys(index.categories).length} categories`];
  parts.push(server.localization ? "localisation on" : "localisation off");
  if (status.classifier) parts.push(`classifier ${status.classifier.state || "present"}`);
  $("index-status").textContent = parts.join(" · ");
  $("k").value = server.default_k;
  $("k").max = server.max_k;
  const chain = server.rerankers;
  $("rerank-chain").textContent = chain.length ? `(${chain.join(" → ")})` : "(no re-rankers configured)";
  $("rerank").disabled = !chain.length || !server.rerank_switchable;
  $("rerank").checked = chain.length > 0;
  const trained = status.classifier && ["fresh", "stale"].includes(status.classifier.state);
  $("gating-label").hidden = !(trained && server.gating_switchable);
  renderWrites();
  await loadCategories();
}

async function loadCategories() {
  const categories = await api("/api/categories");
  for (const id of ["category", "browse-category"]) {
    const select = $(id);
    const chosen = select.value;
    select.replaceChildren(select.options[0]);
    for (const { name, count } of categories) {
      if (name !== null) select.append(el("option", { value: name, text: `${name} (${count})` }));
    }
    select.value = chosen;
  }
}

// -- search
function searchParams() {
  const params = new URLSearchParams({ k: $("k").value || "10" });
  if ($("category").value) params.set("category", $("category").value);
  if (!$("rerank").disabled) params.set("rerank", $("rerank").checked ? "true" : "false");
  if (!$("gating-label").hidden) params.set("gating", $("gating").checked ? "true" : "false");
  return params;
}

async function searchPhoto(file) {
  state.photo = file;
  $("search-again").disabled = false;
  showError(null);
  $("query-photo").src = URL.createObjectURL(file);
  $("query-name").textContent = file.name || "photo";
  const form = new FormData();
  form.append("file", file, file.name || "photo.jpg");
  await runSearch(`/api/search?${searchParams()}`, { method: "POST", body: form });
}

async function searchSimilar(item) {
  showError(null);
  showTab("search");
  $("query-photo").src = item.thumbnail_url;
  $("query-name").textContent = item.name;
  await runSearch(`/api/items/${item.id}/similar?${searchParams()}`);
}

async function runSearch(url, options) {
  document.body.classList.add("busy");
  try {
    const answer = await api(url, options);
    renderQuery(answer);
    renderResults(answer);
  } catch (error) {
    clearSearch(); // never the new photo beside the last search's results
    showError(error);
  } finally {
    document.body.classList.remove("busy");
  }
}

function clearSearch() {
  $("query-panel").hidden = true;
  $("results-header").hidden = true;
  $("results").replaceChildren();
  $("query-photo").removeAttribute("src");
}

function renderQuery(answer) {
  $("query-panel").hidden = false;
  showImage("cutout-figure", "query-cutout", answer.cutout_url);
  showImage("mask-figure", "query-mask", answer.mask_url);
  renderPrediction(answer.classification);
  const located = answer.localization;
  $("localization-note").textContent = located
    ? located.found
      ? `object found: ${(located.object_fraction * 100).toFixed(0)} % of the photo`
      : `no object found (${located.reason}): the whole photo was used`
    : "";
  renderTimings(answer.timings_ms);
}

function renderPrediction(prediction) {
  const shown = Boolean(prediction && prediction.category);
  $("prediction").hidden = !shown;
  if (!shown) return;
  $("predicted-category").textContent = prediction.category;
  const probability = prediction.probability;
  $("predicted-probability").textContent = probability == null ? "" : `${(probability * 100).toFixed(1)} %`;
  const top = (prediction.top || []).slice(0, 3).map(({ category, probability: p }) =>
    el("li", {}, [el("span", { text: category }), el("div", { class: "bar" }, [barFill(p)]), el("span", { class: "num", text: `${(p * 100).toFixed(1)} %` })]),
  );
  $("predicted-top").replaceChildren(...top);
  const gated = prediction.gated ? "gated" : "not gated";
  $("gating-note").textContent = prediction.reason ? `${gated}: ${prediction.reason}` : "";
}

function showImage(figureId, imageId, url) {
  $(figureId).hidden = !url;
  if (url) $(imageId).src = url;
}

function renderTimings(timings) {
  const total = timings.total || Math.max(...Object.values(timings), 1);
  const rows = Object.entries(timings).map(([stage, ms]) =>
    el("tr", { class: stage === "total" ? "total" : "" }, [
      el("th", { text: stage }),
      el("td", {}, [el("div", { class: "bar" }, [barFill(ms / total)])]),
      el("td", { class: "num", text: `${ms.toFixed(1)} ms` }),
    ]),
  );
  $("timings").replaceChildren(...rows);
}

function barFill(fraction) {
  const fill = el("span");
  fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  return fill;
}

function renderResults(answer) {
  $("results-header").hidden = false;
  const where = answer.searched_categories ? ` in ${answer.searched_categories.join(", ")}` : "";
  $("results-title").textContent = `Top ${answer.hits.length} for ${answer.query}${where}`;
  $("overlay-legend").hidden = !answer.hits.some((hit) => hit.overlay_url);
  $("results").replaceChildren(...answer.hits.map(resultCard));
}

function resultCard(hit) {
  const breakdown = Object.entries(hit.scores).map(([name, value]) =>
    el("li", {}, [el("span", { text: name }), el("div", { class: "bar" }, [barFill(value)]), el("span", { class: "num", text: fmt(value) })]),
  );
  const pictures = [el("a", { href: hit.image_url, target: "_blank", rel: "noopener" }, [
    el("img", { src: hit.thumbnail_url, alt: hit.name, loading: "lazy" }),
  ])];
  if (hit.overlay_url) {
    pictures.push(el("img", { class: "overlay", src: hit.overlay_url, alt: "silhouette overlay", title: "query over result" }));
  }
  return el("li", { class: "card result-card", "data-id": String(hit.id) }, [
    el("div", { class: "pictures" }, pictures),
    el("div", { class: "card-head" }, [el("span", { class: "rank", text: `#${hit.rank}` }), el("span", { class: "score", text: fmt(hit.score) })]),
    el("p", { class: "name", text: hit.name, title: hit.name }),
    el("p", { class: "muted", text: hit.category || "uncategorised" }),
    el("ul", { class: "breakdown" }, breakdown),
    el("button", { type: "button", class: "link", text: "more like this", onclick: () => searchSimilar(hit) }),
  ]);
}

// -- browse and edit the catalogue
async function loadCatalogPage() {
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset: state.browseOffset });
  if ($("browse-category").value) params.set("category", $("browse-category").value);
  try {
    const page = await api(`/api/items?${params}`);
    const last = Math.min(page.offset + page.items.length, page.total);
    $("page-info").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "empty";
    $("prev-page").disabled = page.offset === 0;
    $("next-page").disabled = last >= page.total;
    $("catalog").replaceChildren(...page.items.map(catalogCard));
  } catch (error) {
    showError(error);
  }
}

function catalogCard(item) {
  const actions = [el("button", { type: "button", class: "link", text: "find similar", onclick: () => searchSimilar(item) })];
  if (writes().enabled) {
    actions.push(el("button", { type: "button", class: "link danger", text: "remove", onclick: () => removeItem(item) }));
  }
  return el("li", { class: "card" }, [
    el("a", { href: item.image_url, target: "_blank", rel: "noopener" }, [el("img", { src: item.thumbnail_url, alt: item.name, loading: "lazy" })]),
    el("p", { class: "name", text: item.name, title: item.name }),
    el("p", { class: "muted", text: `${item.category || "uncategorised"} · id ${item.id}` }),
    el("div", { class: "card-actions" }, actions),
  ]);
}

async function removeItem(item) {
  if (!confirm(`Remove ${item.name} (id ${item.id}) from the index?`)) return;
  try {
    await write(`/api/items/${item.id}`, { method: "DELETE" });
    await refreshCatalog();
  } catch (error) {
    showError(error);
  }
}

async function addPhotos(event) {
  event.preventDefault();
  const files = $("add-files").files;
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  if ($("add-category").value.trim()) form.append("category", $("add-category").value.trim());
  try {
    const answer = await write("/api/items", { method: "POST", body: form });
    showError(null);
    $("add-files").value = "";
    const count = (status) => answer.items.filter((item) => item.status === status).length;
    const parts = [`added ${count("added") + count("updated")}`, `already there ${count("unchanged")}`];
    if (count("duplicate")) parts.push(`sent twice ${count("duplicate")}`);
    if (answer.failed.length) parts.push(`failed ${answer.failed.map((f) => `${f.name} (${f.reason})`).join(", ")}`);
    $("page-info").textContent = parts.join(", ");
    await refreshCatalog();
  } catch (error) {
    showError(error);
  }
}

async function refreshCatalog() {
  await loadStatus();
  await loadCatalogPage();
}

// -- catalogue health: duplicate groups, likely mislabelled images, outliers; fixed through the write API
async function loadHealth() {
  const params = new URLSearchParams();
  if ($("health-threshold").value) params.set("threshold", $("health-threshold").value);
  $("health-summary").textContent = "checking…";
  try {
    const [duplicates, audit] = await Promise.all([
      api(`/api/catalogue-health/duplicates?${params}`),
      api("/api/catalogue-health/audit"),
    ]);
    showError(null);
    renderDuplicates(duplicates);
    renderAudit(audit);
    $("health-summary").textContent = `${duplicates.images} images checked in ${fmt(duplicates.seconds + audit.seconds, 1)} s`;
  } catch (error) {
    $("health-summary").textContent = "";
    showError(error);
  }
}

function renderDuplicates(report) {
  const precision = report.expected_precision === null ? "no measured precision at this threshold"
    : `expected precision ${fmt(report.expected_precision, 2)}`;
  $("duplicates-note").textContent = report.groups.length
    ? `${report.groups.length} groups at similarity ≥ ${report.threshold} (${precision}); the suggested keeper is marked.`
    : `No near-duplicates at similarity ≥ ${report.threshold} (${precision}).`;
  $("duplicate-groups").replaceChildren(...report.groups.map((group, n) => el("div", { class: "health-group" }, [
    el("h3", { text: `group ${n + 1}: ${group.kind === "exact" ? "exact copies" : "near-duplicates"}, best score ${fmt(Math.max(...group.pairs.map((p) => p[2])))}` }),
    el("ul", { class: "grid catalog" }, group.members.map((member) => healthCard(member, [
      `${member.category || "uncategorised"} · ${member.width}×${member.height}`,
      member.keeper ? "keep" : member.exact_copy_of ? `copy of ${member.exact_copy_of}` : "",
    ], member.keeper ? [] : [["remove", () => removeFromHealth(member)]]))),
  ])));
}

function renderAudit(report) {
  $("suspects-note").textContent = report.mislabelled.length
    ? `Their nearest neighbours mostly carry another ${report.labels.join(" or ")}.`
    : "No image whose neighbours vote for another label.";
  $("suspects").replaceChildren(...report.mislabelled.map((suspect) => healthCard(suspect, [
    `${suspect.label}: ${suspect.current || "none"} → ${suspect.voted} (${Math.round(suspect.share * 100)}% of the vote)`,
  ], suspect.label === "category"
    ? [[`move to ${suspect.voted}`, () => changeCategory(suspect, suspect.voted)], ["remove", () => removeFromHealth(suspect)]]
    : [["remove", () => removeFromHealth(suspect)]])));
  $("outliers-note").textContent = report.outliers.length
    ? "The least typical images: far from their category's mean, in sparse neighbourhoods."
    : "No outliers listed.";
  $("outliers").replaceChildren(...report.outliers.map((outlier) => healthCard(outlier, [
    `${outlier.category || "uncategorised"} · similarity to category ${fmt(outlier.centroid_similarity)}`,
  ], [["remove", () => removeFromHealth(outlier)]])));
}

function healthCard(image, lines, actions) {
  const buttons = writes().enabled
    ? actions.map(([text, onclick]) => el("button", { type: "button", class: text === "remove" ? "link danger" : "link", text, onclick }))
    : [];
  return el("li", { class: "card", "data-id": image.id }, [
    el("a", { href: image.image_url, target: "_blank", rel: "noopener" }, [el("img", { src: image.thumbnail_url, alt: image.name, loading: "lazy" })]),
    el("p", { class: "name", text: `${image.name} · id ${image.id}`, title: image.name }),
    ...lines.filter(Boolean).map((line) => el("p", { class: "muted", text: line })),
    el("div", { class: "card-actions" }, buttons),
  ]);
}

async function removeFromHealth(image) {
  if (!confirm(`Remove ${image.name} (id ${image.id}) from the index?`)) return;
  try {
    await write(`/api/items/${image.id}`, { method: "DELETE" });
    await loadStatus();
    await loadHealth();
  } catch (error) {
    showError(error);
  }
}

async function changeCategory(image, category) {
  const form = new FormData();
  form.append("category", category);
  try {
    await write(`/api/items/${image.id}/category`, { method: "POST", body: form });
    await loadStatus();
    await loadHealth();
  } catch (error) {
    showError(error);
  }
}

// -- wiring
function showTab(name) {
  for (const button of document.querySelectorAll(".tab")) button.classList.toggle("active", button.dataset.tab === name);
  for (const panel of ["search", "browse", "health"]) $(`tab-${panel}`).hidden = name !== panel;
  // the writes note and key field serve both tabs that write
  if (name === "browse") document.querySelector(".browse-controls").after($("writes-controls"));
  if (name === "health") $("tab-health").prepend($("writes-controls"));
  if (name === "browse") loadCatalogPage();
  if (name === "health") loadHealth();
}

function wireDropZone() {
  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) zone.addEventListener(type, () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) searchPhoto(file);
  });
  $("photo").addEventListener("change", () => {
    const file = $("photo").files[0];
    if (file) searchPhoto(file);
  });
}

function init() {
  wireDropZone();
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.photo) searchPhoto(state.photo);
  });
  for (const button of document.querySelectorAll(".tab")) button.addEventListener("click", () => showTab(button.dataset.tab));
  $("browse-category").addEventListener("change", () => { state.browseOffset = 0; loadCatalogPage(); });
  $("prev-page").addEventListener("click", () => { state.browseOffset = Math.max(0, state.browseOffset - PAGE_SIZE); loadCatalogPage(); });
  $("next-page").addEventListener("click", () => { state.browseOffset += PAGE_SIZE; loadCatalogPage(); });
  $("add-form").addEventListener("submit", addPhotos);
  $("health-form").addEventListener("submit", (event) => { event.preventDefault(); loadHealth(); });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    storeKey($("api-key").value.trim());
    $("api-key").value = "";
    showError(null);
  });
  $("forget-key").addEventListener("click", () => storeKey(""));
  loadStatus().catch(showError);
}

document.addEventListener("DOMContentLoaded", init);
