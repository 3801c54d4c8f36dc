// The paas web console. Plain JavaScript, no dependencies, served by `paas serve`.
//
// Everything it shows comes from the public API under /bigdata/api/v1, called with the
// token typed into the page (kept in sessionStorage, sent as `Authorization: Bearer …`).
// Live status comes from the server-sent event stream at /events, read with fetch() so
// that it carries the token too (EventSource cannot send headers). Values from the server
// are only ever written as text (textContent), never as markup.
'use strict';

const API = '/bigdata/api/v1';
const TOKEN_KEY = 'paas.token';
// The server sends a heartbeat every 15 s; a stream silent for longer than this is dead.
const STREAM_SILENCE_MS = 45000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const TABS = ['nodes', 'services', 'events', 'logs', 'options'];

const state = {
  tokensOn: false,
  products: [],
  selectedProduct: null, // "name/version"
  optionDocs: new Map(), // "name/version" -> options document
  clusters: new Map(), // id -> cluster (a list item, updated by events)
  next: null, // cursor of the next page of clusters
  selected: null, // id of the cluster shown in detail
  detail: null, // its full record
  tab: 'nodes',
  logs: null,
  // The answer to the last action on the selected cluster: {cluster, error} or {cluster, text}.
  notice: null,
  lastEventId: null,
  stream: null, // AbortController of the running event stream
  streamGen: 0, // bumped to stop an older stream loop
};

// ---------------------------------------------------------------------------------------
// Small DOM helpers

const $ = (sel) => document.querySelector(sel);

/** Creates an element; attributes `on…` are listeners; children are nodes or text. */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

function statusBadge(status) {
  return h('span', { class: 'status ' + (status || '') }, status || '?');
}

function shortId(id) {
  return String(id).slice(0, 8);
}

/** "2026-12-02T05:54:12.633Z" as local time, or the text itself if it does not parse. */
function when(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return isNaN(d) ? String(ts) : d.toLocaleString();
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Calls `f` once, `ms` after the last of a burst of calls. */
function debounce(f, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => f(...args), ms);
  };
}

// ---------------------------------------------------------------------------------------
// The API

/** An error answer of the API: its own code and message (`{"error": {code, message}}`). */
class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

function token() {
  return state.tokensOn ? sessionStorage.getItem(TOKEN_KEY) || '' : '';
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra);
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  return headers;
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch (_) {
    // not JSON: described by its status below
  }
  const e = body && body.error;
  if (e && typeof e.message === 'string') {
    return new ApiError(resp.status, e.code, e.message, e.details);
  }
  return new ApiError(resp.status, 'http_' + resp.status, `HTTP ${resp.status} ${resp.statusText}`);
}

/** One API call. Answers `{status, body}`; throws an ApiError for an error answer. */
async function call(method, path, body, asText) {
  const init = { method, headers: authHeaders(), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError(0, 'unreachable', `the server did not answer (${e.message})`);
  }
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (err.status === 401) needToken();
    throw err;
  }
  if (resp.status === 204) return { status: 204, body: null };
  return { status: resp.status, body: asText ? await resp.text() : await resp.json() };
}

const get = async (path) => (await call('GET', path)).body;
const getText = async (path) => (await call('GET', path, undefined, true)).body;

function productPath(key) {
  const [name, version] = key.split('/');
  return `/products/${encodeURIComponent(name)}/${encodeURIComponent(version)}`;
}

// ---------------------------------------------------------------------------------------
// Errors

function describe(err) {
  if (err instanceof ApiError) {
    const where = err.status ? `${err.code}, HTTP ${err.status}` : err.code;
    return { message: err.message, code: where, details: err.details };
  }
  return { message: String(err && err.message ? err.message : err), code: 'console', details: null };
}

function hasDetails(d) {
  return d !== undefined && d !== null && !(typeof d === 'object' && Object.keys(d).length === 0);
}

/** Shows an error in the banner, in the API's own words. */
function showError(err) {
  const d = describe(err);
  $('#error-message').textContent = d.message;
  $('#error-code').textContent = `(${d.code})`;
  const pre = $('#error-details');
  pre.hidden = !hasDetails(d.details);
  pre.textContent = hasDetails(d.details) ? JSON.stringify(d.details, null, 2) : '';
  $('#error').hidden = false;
}

function clearError() {
  $('#error').hidden = true;
}

/** An error shown next to a form, in the API's own words. */
function formError(el, err) {
  const d = describe(err);
  el.className = 'form-error';
  el.textContent = `${d.message} (${d.code})` + (hasDetails(d.details) ? '\n' + JSON.stringify(d.details) : '');
  el.hidden = false;
}

function formOk(el, text) {
  el.className = 'form-ok';
  el.textContent = text;
  el.hidden = false;
}

// ---------------------------------------------------------------------------------------
// Token

/** Whether the server asks for tokens: an unauthenticated call is refused with 401. */
async function detectTokens() {
  let refusal = null;
  try {
    const resp = await fetch(API + '/products', { cache: 'no-store' });
    if (resp.status === 401) refusal = await errorOf(resp);
  } catch (_) {
    // unreachable: the calls that follow say so
  }
  state.tokensOn = refusal !== null;
  $('#token-form').hidden = !state.tokensOn;
  if (refusal && !sessionStorage.getItem(TOKEN_KEY)) {
    showError(refusal);
    needToken();
  }
}

/** Asks for a token (after a 401): shows the field and puts the cursor in it. */
function needToken() {
  state.tokensOn = true;
  $('#token-form').hidden = false;
  $('#token').focus();
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    setLive('offline', 'token needed');
  }
}

function useToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  $('#token').value = '';
  $('#token').placeholder = value ? 'token set (type to replace)' : 'paste your API token';
  clearError();
  state.lastEventId = null;
  state.clusters.clear();
  state.selected = null;
  state.detail = null;
  renderDetail();
  reload();
  connect();
}

// ---------------------------------------------------------------------------------------
// Products and the launch form

async function loadProducts() {
  const body = await get('/products');
  state.products = (body.products || []).slice().sort((a, b) =>
    a.name === b.name ? a.version.localeCompare(b.version) : a.name.localeCompare(b.name));
  renderProducts();
}

function renderProducts() {
  const list = $('#products');
  list.replaceChildren();
  if (state.products.length === 0) {
    list.append(h('li', { class: 'muted' }, 'No products registered yet.'));
  }
  for (const p of state.products) {
    const key = `${p.name}/${p.version}`;
    const parts = p.parts || {};
    list.append(h('li', {},
      h('button', {
        type: 'button', class: 'product', 'aria-pressed': String(state.selectedProduct === key),
        dataset: { product: key }, onclick: () => selectProduct(key),
      },
      h('span', { class: 'name' }, `${p.name} ${p.version}`),
      p.description ? h('span', { class: 'muted' }, p.description) : null,
      h('span', { class: 'parts' },
        ['template', 'options', 'orchestrator'].map((part) =>
          h('span', { class: 'part' + (parts[part] ? '' : ' missing') },
            (parts[part] ? '✓ ' : '✗ ') + part))))));
  }
}

async function selectProduct(key) {
  state.selectedProduct = key;
  renderProducts();
  const box = $('#launch');
  box.replaceChildren(h('p', { class: 'muted' }, 'Loading options…'));
  try {
    const doc = await get(productPath(key) + '/options');
    state.optionDocs.set(key, doc);
    if (state.selectedProduct === key) box.replaceChildren(launchForm(key, doc));
  } catch (err) {
    if (state.selectedProduct !== key) return;
    const msg = h('p', { class: 'form-error' });
    formError(msg, err);
    box.replaceChildren(h('div', { class: 'launch' }, h('h3', {}, `Launch ${key.replace('/', ' ')}`), msg));
  }
}

/** The kind of an option, from its example or default value (as the server decides it). */
function kindOf(value) {
  if (typeof value === 'boolean') return 'boolean';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  if (typeof value === 'string') return 'string';
  return 'json';
}

/** One input for option `key`. `value` is the current value ('' for none). */
function optionField(prefix, key, example, value, doc, tag) {
  const id = `${prefix}-${key}`;
  const kind = kindOf(example);
  const allowed = doc.enum && Array.isArray(doc.enum[key]) ? doc.enum[key] : null;
  let input;
  if (allowed) {
    input = h('select', { id, name: key },
      value === '' ? h('option', { value: '' }, '—') : null,
      allowed.map((v) => h('option', { value: JSON.stringify(v) }, String(v))));
    if (value !== '') input.value = JSON.stringify(value);
  } else if (kind === 'boolean') {
    input = h('input', { id, name: key, type: 'checkbox', checked: value === true });
  } else if (kind === 'json') {
    input = h('textarea', { id, name: key, spellcheck: 'false', value: value === '' ? '' : JSON.stringify(value) });
  } else {
    input = h('input', {
      id, name: key, type: 'text', autocomplete: 'off',
      inputmode: kind === 'string' ? null : (kind === 'integer' ? 'numeric' : 'decimal'),
      placeholder: value === '' ? String(example) : null,
      value: value === '' ? '' : String(value),
    });
  }
  input.dataset.kind = allowed ? 'enum' : kind;
  input.dataset.initial = value === '' ? '' : JSON.stringify(value);
  const desc = doc.descriptions && doc.descriptions[key];
  return h('div', { class: 'field' },
    h('label', { for: id }, key, tag ? h('span', { class: 'tag' }, tag) : null,
      h('span', { class: 'tag' }, allowed ? 'one of ' + allowed.join(', ') : kind)),
    input,
    desc ? h('span', { class: 'hint' }, String(desc)) : null);
}

/**
 * The value an input holds, as JSON: typed when it reads as its kind, else the text as
 * typed, so that the server (not the console) says what is wrong with it.
 */
function inputValue(input) {
  const kind = input.dataset.kind;
  if (kind === 'boolean') return input.checked;
  const raw = input.value;
  if (kind === 'enum' || kind === 'json') {
    try {
      return JSON.parse(raw);
    } catch (_) {
      return raw;
    }
  }
  if ((kind === 'integer' || kind === 'number') && /^\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$/.test(raw)) {
    return Number(raw);
  }
  return raw;
}

/** The options a form changes: required ones when filled in, others when not the default. */
function changedOptions(form) {
  const out = {};
  for (const input of form.querySelectorAll('[data-kind]')) {
    const isRequired = input.dataset.required === 'true';
    if (isRequired) {
      if (input.value.trim() === '') continue;
      out[input.name] = inputValue(input);
      continue;
    }
    const v = inputValue(input);
    if (JSON.stringify(v) !== input.dataset.initial) out[input.name] = v;
  }
  return out;
}

function launchForm(key, doc) {
  const required = Object.entries(doc.required || {});
  const optional = Object.entries(doc.optional || {});
  const advanced = Object.entries(doc.advanced || {});
  const result = h('p', { id: 'launch-result', hidden: true });
  const submit = h('button', { type: 'submit', id: 'launch-submit' }, 'Launch');
  const form = h('form', { id: 'launch-form', novalidate: true, onsubmit: (e) => { e.preventDefault(); launch(key, form, submit, result); } },
    required.length ? h('fieldset', {}, h('legend', {}, 'Required'),
      required.map(([k, ex]) => {
        const f = optionField('opt', k, ex, '', doc, 'required');
        f.querySelector('[data-kind]').dataset.required = 'true';
        return f;
      })) : null,
    optional.length ? h('fieldset', {}, h('legend', {}, 'Optional'),
      optional.map(([k, def]) => optionField('opt', k, def, def, doc, null))) : null,
    advanced.length ? h('details', { class: 'advanced' }, h('summary', {}, `Advanced (${advanced.length}, admins only)`),
      h('fieldset', {}, advanced.map(([k, def]) => optionField('opt', k, def, def, doc, 'admin')))) : null,
    h('div', { class: 'form-actions' }, submit),
    result);
  const template = h('details', { class: 'template' }, h('summary', {}, 'Show the template'), h('pre', {}, 'Loading…'));
  template.addEventListener('toggle', async () => {
    if (!template.open || template.dataset.loaded) return;
    const pre = template.querySelector('pre');
    try {
      pre.textContent = await getText(productPath(key) + '/template');
      template.dataset.loaded = 'yes';
    } catch (err) {
      pre.textContent = describe(err).message;
    }
  });
  return h('div', { class: 'launch' }, h('h3', {}, `Launch ${key.replace('/', ' ')}`), form, template);
}

async function launch(key, form, submit, result) {
  submit.disabled = true;
  result.hidden = true;
  try {
    const { body } = await call('POST', productPath(key), changedOptions(form));
    formOk(result, `Launched cluster ${body.id} (${body.status}).`);
    if (!state.clusters.has(body.id)) upsertCluster({ id: body.id, status: body.status });
    selectCluster(body.id);
  } catch (err) {
    formError(result, err);
  } finally {
    submit.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------
// Clusters

async function loadClusters(more) {
  const query = more && state.next ? '?cursor=' + encodeURIComponent(state.next) : '';
  const body = await get('/clusters' + query);
  if (!more) state.clusters.clear();
  for (const c of body.clusters || []) upsertCluster(c);
  state.next = body.next || null;
  renderClusters();
}

/** Takes in a newer view of a cluster (from a list, a record or an event). */
function upsertCluster(c) {
  if (!c || !c.id) return;
  // Events carry `size`; records carry `nodes`: keep `size` current from either.
  if (Array.isArray(c.nodes)) c.size = c.nodes.length;
  const old = state.clusters.get(c.id);
  if (old && old.updated_at && c.updated_at && c.updated_at < old.updated_at) return;
  state.clusters.set(c.id, Object.assign({}, old, c));
  if (state.detail && state.detail.id === c.id) Object.assign(state.detail, c);
}


let renderQueued = false;
/** Re-renders the cluster table at the next frame (events may come in bursts). */
function renderClusters() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    drawClusters();
  });
}

function drawClusters() {
  const hide = $('#hide-destroyed').checked;
  const rows = [...state.clusters.values()]
    .filter((c) => !(hide && c.status === 'destroyed'))
    .sort((a, b) => String(b.created_at || '').localeCompare(String(a.created_at || '')));
  const body = $('#clusters tbody');
  body.replaceChildren(...rows.map((c) => h('tr', {
    dataset: { cluster: c.id, status: c.status }, tabindex: '0',
    'aria-selected': String(state.selected === c.id),
    onclick: () => selectCluster(c.id),
    onkeydown: (e) => { if (e.key === 'Enter') selectCluster(c.id); },
  },
  h('td', { class: 'mono', title: c.id }, shortId(c.id)),
  h('td', { class: 'nowrap' }, `${c.product || ''} ${c.version || ''}`),
  h('td', { class: 'hide-narrow' }, c.owner || ''),
  h('td', { class: 'status-cell' }, statusBadge(c.status)),
  h('td', {}, c.size !== undefined ? String(c.size) : ''),
  h('td', { class: 'nowrap hide-narrow' }, when(c.created_at)))));
  $('#clusters-empty').hidden = rows.length > 0;
  $('#more').hidden = !state.next;
}

async function refreshCluster(id) {
  try {
    const c = await get(`/clusters/${id}`);
    upsertCluster(c);
    if (state.selected === id) state.detail = c;
    renderClusters();
    if (state.selected === id) renderDetail();
  } catch (err) {
    if (err.status === 404 && state.selected === id) {
      state.clusters.delete(id);
      renderClusters();
      closeDetail();
    }
    showError(err);
  }
}

function selectCluster(id) {
  if (state.selected !== id) {
    state.selected = id;
    state.detail = state.clusters.get(id) || null;
    state.logs = null;
    state.notice = null;
    history.replaceState(null, '', '#/clusters/' + id);
  }
  renderClusters();
  renderDetail();
  refreshCluster(id);
  if (state.tab === 'logs') loadLogs();
}

function closeDetail() {
  state.selected = null;
  state.detail = null;
  history.replaceState(null, '', location.pathname);
  renderClusters();
  renderDetail();
}

async function loadLogs() {
  const id = state.selected;
  if (!id) return;
  try {
    const text = await getText(`/clusters/${id}/logs`);
    if (state.selected !== id) return;
    state.logs = text;
    drawLogs();
  } catch (err) {
    showError(err);
  }
}

function drawLogs() {
  const pre = $('#logs');
  if (!pre) return;
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = state.logs === null ? 'Loading…' : (state.logs || '(nothing logged yet)');
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

// The detail pane is rebuilt from state on every change, except the options form, which
// keeps what the user is typing: it is rebuilt only for another cluster or generation.
let optionsFormFor = null;
let optionsForm = null;

function renderDetail() {
  const pane = $('#detail');
  const c = state.detail;
  if (!state.selected || !c) {
    pane.hidden = true;
    pane.replaceChildren();
    optionsFormFor = null;
    return;
  }
  pane.hidden = false;
  pane.dataset.cluster = c.id;
  pane.dataset.status = c.status || '';
  pane.dataset.generation = c.generation !== undefined ? String(c.generation) : '';
  const ready = c.status === 'ready';
  const gone = c.status === 'destroyed' || c.status === 'destroying';
  const head = h('div', { class: 'detail-head' },
    h('h2', {}, 'Cluster ', h('span', { class: 'mono' }, c.id)),
    statusBadge(c.status),
    h('button', { type: 'button', class: 'quiet small close', 'aria-label': 'close', onclick: closeDetail }, 'Close'));
  const facts = h('dl', { class: 'facts' },
    h('dt', {}, 'Product'), h('dd', {}, `${c.product || ''} ${c.version || ''}`),
    h('dt', {}, 'Owner'), h('dd', {}, c.owner || ''),
    c.generation !== undefined ? [h('dt', {}, 'Generation'), h('dd', {}, String(c.generation))] : null,
    h('dt', {}, 'Created'), h('dd', {}, when(c.created_at)),
    h('dt', {}, 'Updated'), h('dd', {}, when(c.updated_at)),
    c.reason ? [h('dt', {}, 'Reason'), h('dd', { class: 'reason' }, c.reason)] : null);
  const actionMsg = h('p', { id: 'action-result', hidden: true });
  const notice = state.notice && state.notice.cluster === c.id ? state.notice : null;
  if (notice && notice.error) formError(actionMsg, notice.error);
  else if (notice) formOk(actionMsg, notice.text);
  const destroy = h('button', { type: 'button', id: 'destroy', class: 'danger', disabled: gone },
    gone ? (c.status === 'destroyed' ? 'Destroyed' : 'Destroying…') : 'Destroy');
  destroy.addEventListener('click', () => confirmThen(destroy, 'Confirm destroy', () => destroyCluster(c.id)));
  const tabs = h('div', { class: 'tabs', role: 'tablist' }, TABS.map((t) => h('button', {
    type: 'button', role: 'tab', dataset: { tab: t }, 'aria-selected': String(state.tab === t),
    onclick: () => { state.tab = t; renderDetail(); if (t === 'logs') loadLogs(); },
  }, t === 'options' ? 'Scale / options' : t[0].toUpperCase() + t.slice(1))));
  const body = h('div', { class: 'tab-body', role: 'tabpanel' }, tabBody(c, ready));
  pane.replaceChildren(head, facts, h('div', { class: 'actions' }, destroy), actionMsg, tabs, body);
  if (state.tab === 'logs') drawLogs();
}

/** A destructive button asks once more: the first click arms it for 4 s. */
function confirmThen(button, label, action) {
  if (button.dataset.armed === 'yes') {
    button.dataset.armed = '';
    action();
    return;
  }
  const text = button.textContent;
  button.dataset.armed = 'yes';
  button.textContent = label;
  setTimeout(() => {
    if (button.dataset.armed === 'yes') {
      button.dataset.armed = '';
      button.textContent = text;
    }
  }, 4000);
}

function tabBody(c, ready) {
  const table = (heads, rows, empty) => rows.length
    ? h('div', { class: 'scroll' }, h('table', { class: 'table' },
      h('thead', {}, h('tr', {}, heads.map((t) => h('th', {}, t)))),
      h('tbody', {}, rows)))
    : h('p', { class: 'muted' }, empty);
  switch (state.tab) {
    case 'nodes':
      return table(['Node', 'Status', 'Address', 'Ports', 'Attempt', 'Message', ''],
        (c.nodes || []).map((n) => h('tr', { dataset: { node: n.name, status: n.status } },
          h('td', { class: 'mono' }, n.name),
          h('td', {}, statusBadge(n.status)),
          h('td', { class: 'mono' }, n.address || n.host || ''),
          h('td', { class: 'mono' }, Object.entries(n.ports || {}).map(([k, v]) => `${k}=${v}`).join(' ')),
          h('td', {}, n.attempt !== undefined ? String(n.attempt) : ''),
          h('td', {}, n.message || ''),
          h('td', { class: 'nowrap' },
            nodeButton(c, n, 'replace', ready),
            ' ',
            nodeButton(c, n, 'restart', ready)))),
        'No nodes.');
    case 'services':
      return table(['Service', 'Nodes', 'Start', 'Ready check'],
        (c.services || []).map((s) => h('tr', {},
          h('td', { class: 'mono' }, s.name),
          h('td', { class: 'mono' }, (s.nodes || []).join(' ')),
          h('td', { class: 'mono' }, commandText(s.start)),
          h('td', { class: 'mono' }, commandText(s.ready)))),
        'No services: nothing to configure on the nodes.');
    case 'events':
      return table(['At', 'Status', 'Message'],
        (c.history || []).map((e) => h('tr', {},
          h('td', { class: 'nowrap' }, when(e.at)),
          h('td', {}, statusBadge(e.status)),
          h('td', {}, e.message || ''))),
        'No events.');
    case 'logs':
      return [
        h('div', { class: 'form-actions' }, h('button', { type: 'button', class: 'quiet small', onclick: loadLogs }, 'Reload logs')),
        h('pre', { id: 'logs', class: 'logs' }),
      ];
    default:
      return optionsTab(c, ready);
  }
}

function commandText(cmd) {
  if (cmd === undefined || cmd === null) return '';
  return Array.isArray(cmd) ? cmd.join(' ') : String(cmd);
}

function nodeButton(c, n, verb, ready) {
  return h('button', {
    type: 'button', class: 'quiet small', dataset: { action: verb, node: n.name },
    disabled: !ready, title: ready ? `${verb} ${n.name}` : 'only a ready cluster can do this',
    onclick: (e) => confirmThen(e.currentTarget, `Confirm ${verb}`, () => nodeAction(c.id, n.name, verb)),
  }, verb[0].toUpperCase() + verb.slice(1));
}

function optionsTab(c, ready) {
  const key = `${c.id}@${c.generation}`;
  if (optionsFormFor !== key || !optionsForm) {
    optionsFormFor = key;
    optionsForm = buildOptionsForm(c);
  }
  const submit = optionsForm.querySelector('button[type="submit"]');
  submit.disabled = !ready;
  optionsForm.querySelector('.form-hint').hidden = ready;
  return optionsForm;
}

function buildOptionsForm(c) {
  const pkey = `${c.product}/${c.version}`;
  const doc = state.optionDocs.get(pkey) || { required: {}, optional: {}, advanced: {}, descriptions: {} };
  if (!state.optionDocs.has(pkey)) {
    // Descriptions and kinds come from the product; rebuild once they are here.
    get(productPath(pkey) + '/options').then((d) => {
      state.optionDocs.set(pkey, d);
      if (state.selected === c.id) {
        optionsFormFor = null;
        renderDetail();
      }
    }, () => {});
  }
  const advanced = doc.advanced || {};
  const submit = h('button', { type: 'submit', id: 'update-submit' }, 'Apply');
  const form = h('form', { id: 'update-form', novalidate: true },
    h('p', { class: 'muted' }, 'Change some options (for example size, to scale); the others keep their values. Nodes whose spec changes are replaced one at a time.'),
    Object.entries(c.options || {}).map(([k, v]) => {
      const example = k in (doc.required || {}) ? doc.required[k]
        : k in (doc.optional || {}) ? doc.optional[k]
          : k in advanced ? advanced[k] : v;
      return optionField('upd', k, example, v, doc, k in advanced ? 'admin' : null);
    }),
    h('div', { class: 'form-actions' }, submit, h('span', { class: 'muted form-hint' }, 'only a ready cluster can be updated')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    updateCluster(c.id, form, submit);
  });
  return form;
}

/** Shows the answer to an action on cluster `id` above its tabs (kept across redraws). */
function notify(id, error, text) {
  state.notice = { cluster: id, error, text };
  renderDetail();
}

async function updateCluster(id, form, submit) {
  submit.disabled = true;
  try {
    const { status, body } = await call('PATCH', `/clusters/${id}`, { options: changedOptions(form) });
    notify(id, null, status === 202
      ? `Update accepted: generation ${body.generation}, the cluster is ${body.status}.`
      : `Nothing to change (generation ${body.generation}).`);
    refreshCluster(id);
  } catch (err) {
    notify(id, err);
    submit.disabled = false;
  }
}

async function destroyCluster(id) {
  try {
    const { body } = await call('DELETE', `/clusters/${id}`);
    notify(id, null, `Destroy requested: the cluster is ${body.status}.`);
    refreshCluster(id);
  } catch (err) {
    notify(id, err);
  }
}

async function nodeAction(id, node, verb) {
  try {
    const { body } = await call('POST', `/clusters/${id}/nodes/${encodeURIComponent(node)}/${verb}`);
    notify(id, null, `${verb[0].toUpperCase() + verb.slice(1)} of ${node} accepted: generation ${body.generation}, the cluster is ${body.status}.`);
    refreshCluster(id);
  } catch (err) {
    notify(id, err);
  }
}

// ---------------------------------------------------------------------------------------
// Live events: GET /events as text/event-stream, parsed here

function setLive(kind, text) {
  const el = $('#live');
  el.dataset.state = kind;
  el.textContent = text;
}

/**
 * Reads an event stream: calls `onEvent({id, type, data})` for each event, `onActivity()`
 * for every chunk (heartbeats included). Returns when the stream ends.
 */
async function readEvents(body, onEvent, onActivity) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let ev = { id: null, type: '', data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onActivity();
    buf += value;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buf);
      // A lone CR at the end may be the first half of a CRLF: wait for the next chunk.
      if (!m || (m[0] === '\r' && m.index === buf.length - 1)) break;
      const line = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      if (line === '') {
        if (ev.data.length || ev.type) onEvent({ id: ev.id, type: ev.type || 'message', data: ev.data.join('\n') });
        ev = { id: null, type: '', data: [] };
        continue;
      }
      if (line.startsWith(':')) continue; // a comment: the heartbeat
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'id') ev.id = val;
      else if (field === 'event') ev.type = val;
      else if (field === 'data') ev.data.push(val);
    }
  }
}

/** (Re)starts the event stream, reconnecting after a drop with backoff and Last-Event-ID. */
function connect() {
  if (state.stream) state.stream.abort();
  const gen = ++state.streamGen;
  streamLoop(gen);
}

async function streamLoop(gen) {
  let backoff = BACKOFF_FIRST_MS;
  while (gen === state.streamGen) {
    const ctl = new AbortController();
    state.stream = ctl;
    let silence = null;
    let reason = 'the stream ended';
    const alive = () => {
      clearTimeout(silence);
      silence = setTimeout(() => ctl.abort(), STREAM_SILENCE_MS);
    };
    try {
      setLive('connecting', 'connecting…');
      const headers = authHeaders({ Accept: 'text/event-stream' });
      if (state.lastEventId !== null) headers['Last-Event-ID'] = state.lastEventId;
      const resp = await fetch(API + '/events', { headers, signal: ctl.signal, cache: 'no-store' });
      if (!resp.ok) {
        const err = await errorOf(resp);
        if (err.status === 401 || err.status === 403) {
          // Retrying cannot help: wait for another token.
          setLive('offline', 'live updates: ' + err.message);
          if (err.status === 401) needToken();
          return;
        }
        throw err;
      }
      setLive('live', 'live');
      backoff = BACKOFF_FIRST_MS;
      alive();
      await readEvents(resp.body, (e) => {
        if (e.id !== null) state.lastEventId = e.id;
        onEvent(e);
      }, alive);
    } catch (err) {
      if (gen !== state.streamGen) return;
      reason = describe(err).message;
    } finally {
      clearTimeout(silence);
    }
    if (gen !== state.streamGen) return;
    const wait = backoff + Math.floor(Math.random() * 250);
    setLive('offline', `live updates lost (${reason}); reconnecting in ${Math.ceil(wait / 1000)} s…`);
    await sleep(wait);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }
}

const refreshSelected = debounce(() => {
  if (state.selected) refreshCluster(state.selected);
}, 200);
const refreshLogs = debounce(() => {
  if (state.selected && state.tab === 'logs') loadLogs();
}, 200);

function onEvent(e) {
  if (e.type === 'reset') {
    reload();
    return;
  }
  let d;
  try {
    d = JSON.parse(e.data);
  } catch (_) {
    return; // not ours to understand
  }
  const id = e.type === 'cluster' ? d.id : d.cluster;
  switch (e.type) {
    case 'cluster':
      upsertCluster(d);
      renderClusters();
      break;
    case 'purged':
      state.clusters.delete(d.cluster);
      renderClusters();
      if (state.selected === d.cluster) closeDetail();
      return;
    case 'log':
      if (id === state.selected) refreshLogs();
      return;
    default:
      break;
  }
  // The detail pane shows the record as served: read it again after any change to it.
  if (id && id === state.selected) refreshSelected();
}

// ---------------------------------------------------------------------------------------
// Start

async function reload() {
  const results = await Promise.allSettled([loadProducts(), loadClusters(false)]);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) showError(failed.reason);
  if (state.selected) refreshCluster(state.selected);
}

function bind() {
  $('#token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('#token').value.trim();
    if (value) useToken(value);
  });
  $('#token-forget').addEventListener('click', () => useToken(''));
  $('#error-close').addEventListener('click', clearError);
  $('#refresh').addEventListener('click', () => reload());
  $('#more').addEventListener('click', () => loadClusters(true).catch(showError));
  $('#hide-destroyed').addEventListener('change', renderClusters);
  if (sessionStorage.getItem(TOKEN_KEY)) $('#token').placeholder = 'token set (type to replace)';
}

async function start() {
  bind();
  await detectTokens();
  if (state.tokensOn && !sessionStorage.getItem(TOKEN_KEY)) return;
  // Stream first, then read: a change made while the lists load is not missed.
  connect();
  const m = /^#\/clusters\/([0-9a-f-]{36})$/.exec(location.hash);
  if (m) selectCluster(m[1]);
  await reload();
}

start();
