// The operators' dashboard: a page over the REST API, with the key the operator signs in with. It holds no state
// of its own beyond this browser tab; everything it shows or changes goes through /api/v1, so it can do nothing
// the key could not do with curl. Text from the API is only ever set as text (never as HTML).

const KEY = 'switchyard-key';
const TENANT = 'switchyard-tenant';
const PAGE_SIZE = '50';
// The most ids one requeue request takes (`POST /dead-letters/requeue`).
const MAX_REQUEUE_IDS = 1000;
const OVERVIEW_REFRESH_MS = 5000;
// A delivery's detail follows it while an attempt is due or in flight.
const DETAIL_REFRESH_MS = 2000;

const $ = (id) => document.getElementById(id);

let session = null; // { key, admin, tenant }
let endpointUrls = new Map();
let tenantNames = new Map();
let overviewTimer = null;
// Bumped whenever what is on screen changes meaning (another view, tenant or session): an answer that arrives
// after that is dropped instead of being drawn over the new view. Actions check where they are with `stillOn`.
let epoch = 0;

// A refused request reads as what was wrong with it; the status code is only news when the server failed.
class ApiFailure extends Error {
  constructor(status, error) {
    const field = error && error.field ? ` (${error.field})` : '';
    const message = `${error && error.message ? error.message : 'request failed'}${field}`;
    super(status >= 500 ? `The server could not do it (${status}): ${message}` : message);
    this.status = status;
    this.field = (error && error.field) || null;
  }
}

async function api(method, path, body, options = {}) {
  const response = await request(method, path, body, options);
  const json = await jsonOf(response);
  if (!response.ok) throw refused(response, json);
  return json;
}

// `server`: the admin key reads the server's own records (the audit entries of plugin uploads), no tenant's.
async function request(method, path, body, { server = false } = {}) {
  if (!session) throw new Error('Signed out.');
  const headers = { Authorization: `Bearer ${session.key}` };
  const adminRoute = path.startsWith('/tenants') || path.startsWith('/plugins');
  if (session.admin && session.tenant && !adminRoute && !server) headers['Switchyard-Tenant'] = session.tenant;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
}

async function jsonOf(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function refused(response, json) {
  const failure = new ApiFailure(response.status, json && json.error);
  if (response.status === 401 && session) {
    signOut('The key was refused: sign in again.');
  }
  return failure;
}

// A CSV export of what `params` select. The key travels in a header, which a plain link cannot send: the file is
// fetched, then handed to the browser to save.
async function download(path, params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  const response = await request('GET', query ? `${path}?${query}` : path);
  if (!response.ok) throw refused(response, await jsonOf(response));
  const blob = await response.blob();
  const named = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition') || '');
  const link = el('a', { href: URL.createObjectURL(blob), download: named ? named[1] : 'export.csv', hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  // Revoked later: the browser reads the blob after the click returns.
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Text from the API placed inside a sentence: isolated, so right-to-left characters in it cannot reorder the
// sentence around it.
function isolate(text) {
  return `\u2068${text}\u2069`;
}

// A tenant as the picker names it, for a message about a tenant other than the one shown.
function tenantLabel(id) {
  const name = tenantNames.get(id);
  return name ? `${name} (${id})` : id;
}

// What a message about an action adds when the operator moved to another tenant before it finished.
function elsewhere(start) {
  return session.tenant === start.tenant ? '' : ` (tenant ${isolate(tenantLabel(start.tenant))})`;
}

function time(rfc3339) {
  return rfc3339 ? rfc3339.replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '—';
}

function statusBadge(status) {
  return el('span', { class: `status status-${status}` }, status);
}

function lastResult(delivery) {
  const parts = [];
  if (delivery.last_status_code) parts.push(`HTTP ${delivery.last_status_code}`);
  if (delivery.last_error) parts.push(delivery.last_error);
  return parts.join(' · ') || '—';
}

function endpointLabel(id) {
  const url = endpointUrls.get(id);
  return el('span', { class: 'mono', title: url || id }, url || id);
}

function showError(error) {
  $('notice').textContent = '';
  $('error').textContent = error instanceof Error ? error.message : String(error);
}

function showNotice(text) {
  $('error').textContent = '';
  $('notice').textContent = text;
}

function clearMessages() {
  $('error').textContent = '';
  $('notice').textContent = '';
}

// Where an action started: it may finish after the operator moved on, signed out or signed in again.
function here() {
  return { session, tenant: session && session.tenant };
}

// Whether `view` shows, for the session and tenant an action started in: then it may redraw that view.
function stillOn(start, view) {
  return session === start.session && session.tenant === start.tenant && !$(`view-${view}`).hidden;
}

// A table filled page by page from a listing route (`data` and `next_cursor`).
class PagedTable {
  constructor(tbody, more, path, row, onPage = () => {}) {
    this.tbody = tbody;
    this.more = more;
    this.path = path;
    this.row = row;
    this.onPage = onPage;
    this.params = {};
    this.options = {};
    this.cursor = null;
    this.generation = 0;
    more.addEventListener('click', () => this.next().catch(showError));
  }

  placeholder(text, kind) {
    const columns = this.tbody.closest('table').querySelectorAll('thead th').length;
    return el('tr', { class: kind }, el('td', { colspan: columns }, text));
  }

  async reload(params = {}, options = {}) {
    this.params = Object.fromEntries(Object.entries(params).filter(([, v]) => v));
    this.options = options;
    this.cursor = null;
    this.more.hidden = true;
    this.generation += 1;
    this.tbody.replaceChildren(this.placeholder('Loading…', 'loading'));
    await this.next();
  }

  async next() {
    const generation = this.generation;
    const view = epoch;
    // Only the answer to the latest reload, while its view is the one shown, is drawn.
    const current = () => generation === this.generation && view === epoch;
    const query = new URLSearchParams({ ...this.params, limit: PAGE_SIZE });
    if (this.cursor) query.set('cursor', this.cursor);
    this.more.disabled = true;
    let page;
    try {
      page = await api('GET', `${this.path}?${query}`, undefined, this.options);
    } finally {
      this.more.disabled = false;
      if (current()) this.tbody.querySelector('tr.loading')?.remove();
    }
    if (!current()) return;
    this.tbody.append(...page.data.map((item) => this.row(item)));
    this.cursor = page.next_cursor;
    this.more.hidden = !this.cursor;
    this.onPage();
    if (!this.tbody.children.length) this.tbody.append(this.placeholder('Nothing here.', 'empty'));
  }
}

// ---- Overview

// [status, label, marked for attention when any, marked as a warning above]. A thousand waiting is a queue
// that is not keeping up.
const DELIVERY_CARDS = [
  ['pending', 'Waiting', false, 1000],
  ['delivering', 'In flight', false],
  ['failed', 'Retrying', true],
  ['dead', 'Dead letters', true],
  ['dropped', 'Dropped by a filter', false],
];
const ENDPOINT_CARDS = [
  ['active', 'Active', false],
  ['paused', 'Paused', true],
  ['disabled', 'Disabled', true],
];

function card(attributes, shown, label, alarming) {
  return el(
    'div',
    { class: alarming === 'warning' ? 'card warning' : alarming ? 'card attention' : 'card', ...attributes },
    el('div', { class: 'count' }, shown),
    el('div', { class: 'label' }, label),
  );
}

function cards(container, counts, specs, limit) {
  container.replaceChildren(
    ...specs.map(([status, label, alarming, warnAbove]) => {
      const n = counts[status] || 0;
      const shown = limit && n >= limit ? `${n.toLocaleString('en')}+` : n.toLocaleString('en');
      const level = alarming && n > 0 ? true : warnAbove !== undefined && n > warnAbove ? 'warning' : false;
      return card({ 'data-status': status }, shown, label, level);
    }),
  );
}

async function loadOverview() {
  const asked = epoch;
  const [stats, published] = await Promise.all([api('GET', '/stats'), api('GET', '/stats/event-types')]);
  if (asked !== epoch) return;
  cards($('delivery-counts'), stats.deliveries, DELIVERY_CARDS, stats.count_limit);
  cards($('endpoint-counts'), stats.endpoints, ENDPOINT_CARDS, null);
  dayCards($('day-counts'), stats.last_24h);
  eventTypeRows(published);
}

// The types published most, each with its share of all the events; the rest are counted below the table.
function eventTypeRows(published) {
  const rows = published.event_types.map((type) =>
    el(
      'tr',
      { 'data-type': type.event_type },
      el('td', { class: 'mono' }, type.event_type),
      el('td', {}, type.events.toLocaleString('en')),
      el('td', {}, percent(type.events / published.events)),
      el('td', {}, type.deliveries.toLocaleString('en')),
    ),
  );
  if (!rows.length) rows.push(el('tr', { class: 'empty' }, el('td', { colspan: 4 }, 'No events in the last 24 hours.')));
  $('event-type-rows').replaceChildren(...rows);
  const others = published.types - published.event_types.length;
  const more = $('event-types-more');
  more.hidden = others <= 0;
  more.textContent = `${others.toLocaleString('en')} more ${others === 1 ? 'type' : 'types'}, not shown.`;
}

// Rounded down, so 99.96 % of a million is not shown as a perfect 100.0 %.
function percent(rate) {
  return `${(Math.floor(rate * 1000) / 10).toFixed(1)} %`;
}

// A mean attempt time; a dash without attempts.
function milliseconds(ms) {
  if (ms === null) return '—';
  return ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

// How a day's success rate is marked: under 80 % for attention, under 90 % as a warning (the thresholds
// operators of the systems our users come from alert on).
function successLevel(rate) {
  if (rate === null) return false;
  return rate < 0.8 ? true : rate < 0.9 ? 'warning' : false;
}

// Attempts that take two seconds on average are a receiver slowing down before it times out.
const SLOW_ATTEMPT_MS = 2000;

// The success and retry rates are of finished deliveries; none finished shows a dash rather than 0 % or 100 %.
function dayCards(container, day) {
  const rate = day.success_rate === null ? '—' : percent(day.success_rate);
  const retryRate = day.retry_rate === null ? '—' : percent(day.retry_rate);
  const count = (field, label, alarming) =>
    card({ 'data-day': field }, day[field].toLocaleString('en'), label, alarming);
  container.replaceChildren(
    card({ 'data-day': 'success_rate' }, rate, 'Success rate', successLevel(day.success_rate)),
    count('succeeded', 'Delivered', false),
    count('dead', 'Dead after retries', day.dead > 0),
    card({ 'data-day': 'retry_rate' }, retryRate, 'Needed a retry', false),
    count('attempts', 'Attempts', false),
    count('failed_attempts', 'Failed attempts', false),
    card(
      { 'data-day': 'mean_attempt_ms' },
      milliseconds(day.mean_attempt_ms),
      'Mean attempt time',
      day.mean_attempt_ms > SLOW_ATTEMPT_MS && 'warning',
    ),
  );
}

// ---- Endpoints

function subscriptionLines(endpoint) {
  return endpoint.subscriptions.map((s) => el('div', {}, s.filter ? `${s.event_type} ${s.filter}` : s.event_type));
}

// Runs `action` with `button` disabled, so a double click cannot run it twice; shows its error if it fails.
async function whileDisabled(button, action) {
  button.disabled = true;
  try {
    await action();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

function actionButton(label, action, ariaLabel) {
  const button = el('button', { type: 'button', 'aria-label': ariaLabel }, label);
  button.addEventListener('click', () => whileDisabled(button, action));
  return button;
}

// A secret or key of a create or rotate answer, shown above every view until "Done", a tenant change or
// sign-out, so leaving the page while it was on its way does not lose it. It names its tenant: the operator may
// have moved to another meanwhile. `owner` is the endpoint or key it belongs to, taken off when that goes.
let secretShownFor = null;

function showOnce(owner, label, value) {
  secretShownFor = owner;
  $('secret-label').textContent = label;
  $('secret-value').textContent = value;
  $('secret-once').hidden = false;
  $('secret-done').focus();
}

function showSecret(endpoint, tenant) {
  const of = isolate(endpoint.url) + (tenant ? ` (tenant ${isolate(tenantLabel(tenant))})` : '');
  if (endpoint.public_key) {
    const label = `The public key of ${of}'s new Ed25519 signing key: give it to the receiver, which verifies each delivery's v1a signature with it. It is not secret; the private key never leaves Switchyard.`;
    showOnce(endpoint.id, label, endpoint.public_key);
    return;
  }
  const label = `The signing secret of ${of}, shown only now: give it to the receiver, which verifies each delivery's signature with it.`;
  showOnce(endpoint.id, label, endpoint.secret);
}

function showKey(key, tenant) {
  const of = tenant ? ` (tenant ${isolate(tenantLabel(tenant))})` : '';
  const label = `The API key "${isolate(key.name)}"${of}, scope ${key.scope}, shown only now: Switchyard keeps only its hash.`;
  showOnce(key.id, label, key.key);
}

function hideSecret() {
  secretShownFor = null;
  $('secret-value').textContent = '';
  $('secret-label').textContent = '';
  $('secret-once').hidden = true;
}

function endpointRow(endpoint) {
  endpointUrls.set(endpoint.id, endpoint.url);
  const path = `/endpoints/${encodeURIComponent(endpoint.id)}`;
  const action = endpoint.status === 'active' ? 'pause' : 'activate';
  const label = action === 'pause' ? 'Pause' : 'Activate';
  const toggle = actionButton(
    label,
    async () => {
      const start = here();
      await api('POST', `${path}/${action}`);
      if (session !== start.session) return;
      showNotice(`Endpoint ${isolate(endpoint.url)}${elsewhere(start)} ${action === 'pause' ? 'paused' : 'activated'}.`);
      if (stillOn(start, 'endpoints')) await endpoints.reload();
    },
    `${label} ${endpoint.url}`,
  );
  const test = actionButton(
    'Send test',
    async () => {
      const start = here();
      const sent = await api('POST', `${path}/test`, {});
      if (session !== start.session) return;
      showNotice(`Test event ${sent.event_id} sent to ${isolate(endpoint.url)}${elsewhere(start)} as delivery ${sent.delivery_id}: see Deliveries.`);
    },
    `Send a test event to ${endpoint.url}`,
  );
  // Only an active endpoint takes deliveries: the API refuses a test to a paused or disabled one.
  test.disabled = endpoint.status !== 'active';
  const rotate = actionButton(
    'Rotate secret',
    async () => {
      if (!window.confirm(`Rotate the signing secret of ${endpoint.url}? The old one keeps signing during the grace period (24 h unless the server says otherwise).`)) return;
      const start = here();
      const rotated = await api('POST', `${path}/rotate-secret`, {});
      if (session !== start.session) return; // signed out, or another sign-in: not theirs to see
      showSecret(rotated, session.tenant === start.tenant ? null : start.tenant);
      showNotice(`Secret of ${isolate(endpoint.url)}${elsewhere(start)} rotated.`);
    },
    `Rotate the secret of ${endpoint.url}`,
  );
  const remove = actionButton(
    'Delete',
    async () => {
      if (!window.confirm(`Delete ${endpoint.url}? Its deliveries still waiting become dead letters.`)) return;
      const start = here();
      await api('DELETE', path);
      if (session !== start.session) return;
      endpointUrls.delete(endpoint.id);
      if (secretShownFor === endpoint.id) hideSecret();
      showNotice(`Endpoint ${isolate(endpoint.url)}${elsewhere(start)} deleted.`);
      if (stillOn(start, 'endpoints')) await endpoints.reload();
    },
    `Delete ${endpoint.url}`,
  );
  return el(
    'tr',
    { 'data-id': endpoint.id },
    el('td', { class: 'mono' }, endpoint.url),
    el('td', {}, endpoint.description),
    el('td', {}, statusBadge(endpoint.status), endpoint.status_reason ? ` (${endpoint.status_reason})` : null),
    el('td', { class: 'mono' }, ...subscriptionLines(endpoint)),
    el('td', {}, endpoint.rate_limit ? `${endpoint.rate_limit}/s` : '—'),
    el('td', { class: 'day', 'data-day-for': endpoint.id }, '…'),
    el('td', {}, el('div', { class: 'row-actions' }, toggle, test, rotate, remove)),
  );
}

// "payment.* $[?@.data.amount > 1000]" per line: the type, then the filter if any. Each comes with its line
// number, for errors.
function parseSubscriptions(text) {
  return text
    .split('\n')
    .map((line, index) => ({ text: line.trim(), line: index + 1 }))
    .filter(({ text: line }) => line)
    .map(({ text: line, line: number }) => {
      const space = line.search(/\s/);
      const subscription =
        space < 0 ? { event_type: line } : { event_type: line.slice(0, space), filter: line.slice(space).trim() };
      return { subscription, line: number };
    });
}

const FORM_FIELDS = { url: ['URL', 'endpoint-url'], description: ['Description', 'endpoint-description'] };
const KEY_FIELDS = {
  name: ['Name', 'key-name'],
  scope: ['Scope', 'key-scope'],
  allowed_networks: ['Networks', 'key-networks'],
};

// The API names fields by their JSON path (`subscriptions[2].filter`); the form has labels and lines.
function formError(error, lines, fields = FORM_FIELDS) {
  if (!(error instanceof ApiFailure)) return error;
  const byLine = (text) => text.replace(/subscriptions\[(\d+)\]/g, (_, i) => `line ${lines[Number(i)] ?? Number(i) + 1}`);
  const message = byLine(error.message.replace(/ \([^()]*\)$/, error.field ? '' : '$&'));
  let where = null;
  let input = null;
  if (error.field && Object.hasOwn(fields, error.field)) [where, input] = fields[error.field];
  else if (error.field && error.field.startsWith('subscriptions')) {
    const index = /^subscriptions\[(\d+)\]/.exec(error.field);
    where = index ? `Subscriptions, line ${lines[Number(index[1])] ?? Number(index[1]) + 1}` : 'Subscriptions';
    input = 'endpoint-subscriptions';
  }
  else if (error.field) where = error.field;
  if (input && !$(input).closest('[hidden]')) $(input).focus();
  return new Error(where ? `${where}: ${message}` : message);
}

async function createEndpoint() {
  const body = { url: $('endpoint-url').value.trim() };
  const description = $('endpoint-description').value.trim();
  if (description) body.description = description;
  const parsed = parseSubscriptions($('endpoint-subscriptions').value);
  if (parsed.length) body.subscriptions = parsed.map((p) => p.subscription);
  if ($('endpoint-signing').value === 'asymmetric') body.asymmetric = true;
  const start = here();
  $('endpoint-cancel').disabled = true;
  let created;
  try {
    created = await api('POST', '/endpoints', body);
  } catch (error) {
    if (session !== start.session) return;
    throw formError(error, parsed.map((p) => p.line));
  } finally {
    $('endpoint-cancel').disabled = false;
  }
  if (session !== start.session) return; // signed out, or another sign-in: not theirs to see
  $('endpoint-form').reset();
  $('endpoint-form').hidden = true;
  showSecret(created, session.tenant === start.tenant ? null : start.tenant);
  showNotice(`Endpoint ${isolate(created.url)}${elsewhere(start)} created.`);
  if (stillOn(start, 'endpoints')) await endpoints.reload();
}

// Each listed endpoint's last 24 hours, asked for once per page for the rows that do not show them yet.
async function fillEndpointDays() {
  const cells = [...$('endpoint-rows').querySelectorAll('td[data-day-for]:not([data-filled])')];
  if (!cells.length) return;
  const view = epoch;
  const ids = cells.map((cell) => encodeURIComponent(cell.dataset.dayFor)).join(',');
  const totals = await api('GET', `/stats/endpoints?endpoint_ids=${ids}`);
  if (view !== epoch) return;
  cells.forEach((cell, i) => {
    const day = totals.endpoints[i];
    const finished = day.succeeded + day.dead;
    cell.dataset.filled = 'true';
    cell.textContent = finished ? `${percent(day.success_rate)} of ${finished.toLocaleString('en')}` : '—';
    const retried = day.retry_rate === null ? '' : `, ${percent(day.retry_rate)} after a retry`;
    cell.title = `${day.attempts.toLocaleString('en')} attempts, ${day.failed_attempts.toLocaleString('en')} failed, ${milliseconds(day.mean_attempt_ms)} each on average; ${day.dead.toLocaleString('en')} dead after retries${retried}`;
    cell.classList.toggle('attention', day.dead > 0);
  });
}

const endpoints = new PagedTable($('endpoint-rows'), $('endpoints-more'), '/endpoints', endpointRow, () =>
  fillEndpointDays().catch(showError),
);

// ---- Deliveries

function deliveryRow(delivery) {
  return el(
    'tr',
    { 'data-id': delivery.id },
    el('td', {}, time(delivery.created_at)),
    el('td', { class: 'mono' }, delivery.event_type),
    el('td', {}, endpointLabel(delivery.endpoint_id)),
    el('td', {}, statusBadge(delivery.status)),
    el('td', {}, delivery.attempts),
    el('td', {}, lastResult(delivery)),
    el('td', {}, el('button', { type: 'button', onclick: () => showDelivery(delivery.id).catch(showError) }, 'Details')),
  );
}

const deliveries = new PagedTable($('delivery-rows'), $('deliveries-more'), '/deliveries', deliveryRow);

function deliveryFilter() {
  const hours = Number($('delivery-since').value);
  return {
    status: $('delivery-status').value,
    event_type: $('delivery-event-type').value.trim(),
    endpoint_id: $('delivery-endpoint').value.trim(),
    since: hours ? new Date(Date.now() - hours * 3600000).toISOString() : '',
  };
}

let detailAsked = 0;

async function showDelivery(id) {
  const asked = ++detailAsked;
  const shownIn = epoch;
  const delivery = await api('GET', `/deliveries/${encodeURIComponent(id)}`);
  // Only the last delivery asked for, and only while the list it was asked from is still the one shown.
  if (asked !== detailAsked || shownIn !== epoch) return;
  const retry = actionButton('Retry now', async () => {
    const start = here();
    await api('POST', `/deliveries/${encodeURIComponent(id)}/retry`, {});
    if (session !== start.session) return;
    showNotice(`Delivery ${id} scheduled again.`);
    if (!stillOn(start, 'deliveries')) return;
    await deliveries.reload(deliveryFilter());
    if (stillOn(start, 'deliveries')) await showDelivery(id);
  });
  retry.id = 'retry-delivery';
  // The API refuses a retry while an attempt is in flight; the detail follows the attempt and enables it after.
  retry.disabled = delivery.status === 'delivering';
  const attempts = delivery.attempts_log.map((a) =>
    el(
      'tr',
      {},
      el('td', {}, a.attempt),
      el('td', {}, time(a.started_at)),
      el('td', {}, `${a.duration_ms} ms`),
      el('td', {}, a.status_code ?? '—'),
      el('td', {}, a.outcome),
      el('td', {}, a.error || ''),
      el('td', {}, a.response_body ? el('pre', {}, a.response_body) : ''),
    ),
  );
  const detail = $('delivery-detail');
  detail.replaceChildren(
    el('h3', {}, 'Delivery ', el('code', {}, delivery.id)),
    el(
      'p',
      {},
      statusBadge(delivery.status),
      ` · event `,
      el('code', {}, delivery.event_id),
      ` (${delivery.event_type}) · to `,
      endpointLabel(delivery.endpoint_id),
      delivery.next_attempt_at ? ` · next attempt ${time(delivery.next_attempt_at)}` : '',
    ),
    delivery.last_error ? el('p', { class: 'error' }, delivery.last_error) : '',
    el('div', { class: 'actions' }, retry),
    el(
      'table',
      {},
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          ...['#', 'Started', 'Took', 'Status', 'Outcome', 'Error', 'Response'].map((h) => el('th', {}, h)),
        ),
      ),
      el('tbody', { id: 'attempt-rows' }, ...(attempts.length ? attempts : [el('tr', {}, el('td', { colspan: 7 }, 'No attempt yet.'))])),
    ),
  );
  detail.hidden = false;
  if (delivery.status === 'pending' || delivery.status === 'delivering') {
    setTimeout(() => {
      if (asked === detailAsked && shownIn === epoch && !detail.hidden) showDelivery(id).catch(showError);
    }, DETAIL_REFRESH_MS);
  }
}

// ---- Dead letters

function selectedDeadLetters() {
  return [...document.querySelectorAll('#dead-rows input[type=checkbox]:checked')].map((box) => box.value);
}

function updateRequeueButton() {
  $('requeue-selected').disabled = selectedDeadLetters().length === 0;
}

function deadRow(delivery) {
  return el(
    'tr',
    { 'data-id': delivery.id },
    el(
      'td',
      {},
      el('input', { type: 'checkbox', value: delivery.id, 'aria-label': `select ${delivery.id}`, onchange: updateRequeueButton }),
    ),
    el('td', {}, time(delivery.updated_at)),
    el('td', { class: 'mono' }, delivery.event_type),
    el('td', {}, endpointLabel(delivery.endpoint_id)),
    el('td', {}, delivery.attempts),
    el('td', {}, lastResult(delivery)),
  );
}

// Rows added by "Load more" come unticked, so "select all" no longer holds.
const deadLetters = new PagedTable($('dead-rows'), $('dead-more'), '/dead-letters', deadRow, () => {
  $('select-all-dead').checked = false;
  updateRequeueButton();
});

// Ids go in requests of at most MAX_REQUEUE_IDS; `{}` (every dead letter) in one.
async function requeue(selector) {
  const rerun_plugins = $('rerun-plugins').checked;
  const bodies = [];
  if (selector.delivery_ids) {
    for (let i = 0; i < selector.delivery_ids.length; i += MAX_REQUEUE_IDS) {
      bodies.push({ delivery_ids: selector.delivery_ids.slice(i, i + MAX_REQUEUE_IDS), rerun_plugins });
    }
  } else {
    bodies.push({ ...selector, rerun_plugins });
  }
  const start = here();
  $('requeue-selected').disabled = true;
  $('requeue-all').disabled = true;
  showNotice('Requeuing…');
  let requeued = 0;
  let failure = null;
  try {
    for (const body of bodies) requeued += (await api('POST', '/dead-letters/requeue', body)).requeued;
  } catch (error) {
    failure = error;
  }
  $('requeue-all').disabled = false;
  if (session !== start.session) return;
  if (stillOn(start, 'dead-letters')) await deadLetters.reload().catch(showError);
  const done = `Requeued ${requeued.toLocaleString('en')} dead letter${requeued === 1 ? '' : 's'}.`;
  if (failure) showError(requeued ? `${failure.message} (${done})` : failure);
  else showNotice(done);
}

// ---- Event types

const EVENT_TYPE_FIELDS = {
  name: ['Name', 'event-type-name'],
  description: ['Description', 'event-type-description'],
  schema: ['JSON Schema', 'event-type-schema'],
};

function eventTypeRow(type) {
  const edit = actionButton(
    'Edit',
    async () => {
      $('event-type-name').value = type.name;
      $('event-type-description').value = type.description;
      $('event-type-schema').value = type.schema === null ? '' : JSON.stringify(type.schema, null, 2);
      $('event-type-schema').focus();
    },
    `Edit the event type ${type.name}`,
  );
  const schema = type.schema === null
    ? '—'
    : el('details', {}, el('summary', {}, 'JSON Schema'), el('pre', { class: 'mono' }, JSON.stringify(type.schema, null, 2)));
  return el(
    'tr',
    { 'data-name': type.name },
    el('td', { class: 'mono' }, type.name),
    el('td', {}, type.description || '—'),
    el('td', {}, schema),
    el('td', { class: 'whole' }, time(type.created_at)),
    el('td', { class: 'whole' }, edit),
  );
}

const eventTypes = new PagedTable($('event-type-list'), $('event-type-list-more'), '/event-types', eventTypeRow);

async function saveEventType() {
  const body = { name: $('event-type-name').value.trim(), description: $('event-type-description').value.trim() };
  const text = $('event-type-schema').value.trim();
  if (text) {
    try {
      body.schema = JSON.parse(text);
    } catch (error) {
      $('event-type-schema').focus();
      throw new Error(`JSON Schema: not JSON: ${error.message}`);
    }
  }
  const start = here();
  let saved;
  try {
    saved = await api('POST', '/event-types', body);
  } catch (error) {
    if (session !== start.session) return;
    throw formError(error, [], EVENT_TYPE_FIELDS);
  }
  if (session !== start.session) return;
  if (session.tenant === start.tenant) $('event-type-form').reset();
  const schema = saved.schema === null ? 'no schema' : 'a schema';
  showNotice(`Event type ${saved.name}${elsewhere(start)} saved, with ${schema}.`);
  // In place when listed: a reload would lose the operator's place in a long list.
  const row = $('event-type-list').querySelector(`tr[data-name="${CSS.escape(saved.name)}"]`);
  if (!stillOn(start, 'event-types')) return;
  if (row) row.replaceWith(eventTypeRow(saved));
  else await eventTypes.reload();
}

// ---- API keys

function keyRow(key) {
  // A tenant key revoking itself: the page would be refused from then on.
  const own = !session.admin && session.key.startsWith(key.prefix);
  const revoke = actionButton(
    'Revoke',
    async () => {
      const warning = own ? ' It is the key this page is signed in with: you will be signed out.' : '';
      if (!window.confirm(`Revoke the key "${isolate(key.name)}" (${key.prefix}…)? Whatever uses it is refused at once.${warning}`)) return;
      const start = here();
      await api('DELETE', `/api-keys/${encodeURIComponent(key.id)}`);
      if (session !== start.session) return;
      if (own) {
        signOut(`The key "${isolate(key.name)}" was revoked.`);
        return;
      }
      if (secretShownFor === key.id) hideSecret();
      showNotice(`Key "${isolate(key.name)}"${elsewhere(start)} revoked.`);
      // In place: a reload would lose the operator's place in a long list.
      const row = $('key-rows').querySelector(`tr[data-id="${CSS.escape(key.id)}"]`);
      if (stillOn(start, 'keys') && row) row.replaceWith(keyRow({ ...key, revoked_at: new Date().toISOString() }));
    },
    `Revoke the key ${key.name}`,
  );
  revoke.disabled = Boolean(key.revoked_at);
  const move = actionButton(
    'Networks',
    async () => {
      const current = (key.allowed_networks ?? []).join(' ');
      const typed = window.prompt(
        `Networks the key "${isolate(key.name)}" may be used from (CIDR blocks or addresses, separated by spaces):`,
        current,
      );
      if (typed === null) return;
      const start = here();
      const changed = await api('PATCH', `/api-keys/${encodeURIComponent(key.id)}`, {
        allowed_networks: typed.split(/[\s,]+/).filter(Boolean),
      });
      if (session !== start.session) return;
      showNotice(`Key "${isolate(changed.name)}"${elsewhere(start)} now works from ${networksOf(changed)}.`);
      const row = $('key-rows').querySelector(`tr[data-id="${CSS.escape(key.id)}"]`);
      if (stillOn(start, 'keys') && row) row.replaceWith(keyRow(changed));
    },
    `Change the networks of the key ${key.name}`,
  );
  move.disabled = Boolean(key.revoked_at);
  return el(
    'tr',
    { 'data-id': key.id },
    el('td', {}, key.name),
    el('td', { class: 'mono whole' }, `${key.prefix}…`),
    el('td', { class: 'whole' }, key.scope),
    el('td', { class: 'mono' }, networksOf(key)),
    el('td', { class: 'whole' }, time(key.created_at)),
    el('td', { class: 'whole' }, key.revoked_at ? time(key.revoked_at) : '—'),
    el('td', { class: 'whole' }, move, ' ', revoke),
  );
}

function networksOf(key) {
  return key.allowed_networks?.length ? key.allowed_networks.join(' ') : 'anywhere';
}

const keys = new PagedTable($('key-rows'), $('keys-more'), '/api-keys', keyRow);

async function createKey() {
  const body = { name: $('key-name').value.trim(), scope: $('key-scope').value };
  const networks = $('key-networks').value.split(/[\s,]+/).filter(Boolean);
  if (networks.length) body.allowed_networks = networks;
  const start = here();
  let created;
  try {
    created = await api('POST', '/api-keys', body);
  } catch (error) {
    if (session !== start.session) return;
    throw formError(error, [], KEY_FIELDS);
  }
  if (session !== start.session) return; // signed out, or another sign-in: not theirs to see
  // The form may hold what the operator typed for another tenant since.
  if (session.tenant === start.tenant) $('key-form').reset();
  showKey(created, session.tenant === start.tenant ? null : start.tenant);
  showNotice(`Key "${isolate(created.name)}"${elsewhere(start)} created.`);
  if (stillOn(start, 'keys')) await keys.reload();
}

// ---- Audit log

function auditRow(entry) {
  return el(
    'tr',
    { 'data-id': entry.id },
    el('td', { class: 'whole' }, time(entry.at)),
    el('td', { class: 'mono whole' }, entry.actor),
    el('td', { class: 'mono whole' }, entry.action),
    el('td', { class: 'mono' }, `${entry.resource_type} ${entry.resource_id}`),
    el('td', { class: 'mono' }, visibleJson(entry.details)),
  );
}

// JSON with the bidirectional formatting characters escaped: names stored before they were refused would
// otherwise reorder the rest of the line.
function visibleJson(value) {
  return JSON.stringify(value).replace(/[\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`);
}

const auditLog = new PagedTable($('audit-rows'), $('audit-more'), '/audit-log', auditRow);

function auditFilter() {
  return { action: $('audit-action').value.trim(), resource_id: $('audit-resource').value.trim() };
}

function auditSource() {
  return { server: session.admin && $('audit-server').checked };
}

// ---- Plugins (admin key only)

function pluginRow(plugin) {
  const latest = plugin.versions.find((v) => v.sha256 === plugin.latest);
  const percentiles = latest && latest.p50_us !== null ? `${latest.p50_us} / ${latest.p99_us}` : '—';
  return el(
    'tr',
    { 'data-name': plugin.name },
    el('td', { class: 'mono' }, plugin.name),
    el('td', { class: 'mono', title: plugin.latest || '' }, plugin.latest ? plugin.latest.slice(0, 12) : 'none loaded'),
    el('td', {}, latest ? latest.interfaces.join(', ') : '—'),
    el('td', {}, latest ? latest.calls : '—'),
    el('td', {}, latest ? latest.errors : '—'),
    el('td', {}, percentiles),
    el('td', { class: plugin.last_load_error ? 'error' : '' }, plugin.last_load_error ? plugin.last_load_error.message : ''),
  );
}

async function loadPlugins() {
  const asked = epoch;
  const plugins = await api('GET', '/plugins');
  if (asked !== epoch) return;
  const rows = plugins.data.map(pluginRow);
  $('plugin-rows').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 7 }, 'No plugin loaded.'))]));
}

// ---- Views

const VIEWS = {
  overview: loadOverview,
  endpoints: () => endpoints.reload(),
  deliveries: () => deliveries.reload(deliveryFilter()),
  'dead-letters': () => deadLetters.reload(),
  'event-types': () => eventTypes.reload(),
  keys: () => keys.reload(),
  audit: () => auditLog.reload(auditFilter(), auditSource()),
  plugins: loadPlugins,
};

// `push`: a new entry in the browser's history (a click on a tab), rather than correcting the current one.
async function show(view, { push = false } = {}) {
  epoch += 1;
  clearInterval(overviewTimer);
  overviewTimer = null;
  clearMessages();
  for (const name of Object.keys(VIEWS)) $(`view-${name}`).hidden = name !== view;
  for (const button of document.querySelectorAll('nav button')) {
    if (button.dataset.view === view) button.setAttribute('aria-current', 'page');
    else button.removeAttribute('aria-current');
  }
  $('delivery-detail').hidden = true;
  if ($('endpoint-cancel').disabled === false) $('endpoint-form').reset();
  $('endpoint-form').hidden = true;
  // The view is in the address, so a reload comes back to it and Back returns to the tab before. Anything but
  // a tab's click corrects the address in place: an address this key may not open (`#plugins` for a tenant
  // key) would otherwise sit under the corrected one, and Back would lead to it and straight back again.
  if (location.hash !== `#${view}`) {
    if (push) history.pushState(null, '', `#${view}`);
    else history.replaceState(null, '', `#${view}`);
  }
  const shown = epoch;
  try {
    await VIEWS[view]();
  } finally {
    // Refreshing goes on after a failed first load, but not once another view or session has taken over.
    if (view === 'overview' && shown === epoch && session) {
      overviewTimer = setInterval(() => {
        if (!document.hidden) loadOverview().catch(showError);
      }, OVERVIEW_REFRESH_MS);
    }
  }
}

function currentView() {
  const button = document.querySelector('nav button[aria-current="page"]');
  return button ? button.dataset.view : 'overview';
}

// Endpoint URLs label the deliveries; a tenant with more than 1,000 endpoints sees the later ones by id.
async function loadEndpointUrls() {
  endpointUrls = new Map();
  const page = await api('GET', '/endpoints?limit=1000');
  for (const endpoint of page.data) endpointUrls.set(endpoint.id, endpoint.url);
}

// ---- Signing in and out

async function allTenants() {
  const tenants = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: '1000' });
    if (cursor) query.set('cursor', cursor);
    const page = await api('GET', `/tenants?${query}`);
    tenants.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return tenants;
}

async function signIn(key, tenant) {
  session = { key, admin: false, tenant: null };
  try {
    const tenants = await allTenants();
    session.admin = true;
    if (!tenants.length) {
      throw new Error('No tenant yet: create one with POST /api/v1/tenants, then sign in again.');
    }
    const byName = [...tenants].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    tenantNames = new Map(tenants.map((t) => [t.id, t.name]));
    const picker = $('tenant');
    picker.replaceChildren(...byName.map((t) => el('option', { value: t.id }, `${t.name} (${t.id})`)));
    const known = tenants.some((t) => t.id === tenant);
    session.tenant = known ? tenant : byName[0].id;
    picker.value = session.tenant;
  } catch (error) {
    if (!(error instanceof ApiFailure) || error.status !== 403) {
      session = null;
      throw error;
    }
    // A tenant key: admin routes are closed to it, and every other route acts for its own tenant.
  }
  try {
    await loadEndpointUrls();
  } catch (error) {
    session = null;
    throw error;
  }
  sessionStorage.setItem(KEY, key);
  if (session.tenant) sessionStorage.setItem(TENANT, session.tenant);
  $('tenant-picker').hidden = !session.admin;
  $('who').textContent = session.admin ? 'admin key' : 'tenant key';
  for (const node of document.querySelectorAll('[data-admin-only]')) node.hidden = !session.admin;
  $('sign-in').hidden = true;
  $('session').hidden = false;
  $('app').hidden = false;
  await show(viewInAddress());
}

function viewInAddress() {
  const asked = location.hash.slice(1);
  const allowed = Object.hasOwn(VIEWS, asked) && (asked !== 'plugins' || session.admin);
  return allowed ? asked : 'overview';
}

// What one tenant's pages showed, taken off when another tenant or session comes.
function clearShown() {
  for (const id of ['delivery-counts', 'endpoint-counts', 'day-counts', 'endpoint-rows', 'delivery-rows', 'dead-rows', 'key-rows', 'audit-rows', 'plugin-rows', 'delivery-detail']) {
    $(id).replaceChildren();
  }
  $('delivery-detail').hidden = true;
  hideSecret();
}

function signOut(message) {
  epoch += 1;
  tenantNames = new Map();
  $('key-form').reset();
  $('event-type-form').reset();
  $('audit-filter').reset();
  clearInterval(overviewTimer);
  overviewTimer = null;
  session = null;
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(TENANT);
  $('app').hidden = true;
  $('session').hidden = true;
  $('sign-in').hidden = false;
  $('key').value = '';
  $('sign-in-error').textContent = message || '';
  // Nothing of this session stays on the page for the next key to see.
  clearShown();
  $('tenant').replaceChildren();
  clearMessages();
}

// ---- Wiring

$('sign-in-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('sign-in-error').textContent = '';
  const key = $('key').value.trim();
  // A key travels in a header, which takes visible ASCII only; say so rather than show the browser's error.
  if (!/^[\x21-\x7e]+$/.test(key)) {
    $('sign-in-error').textContent = 'A key is made of visible ASCII characters, without spaces.';
    return;
  }
  try {
    await signIn(key, sessionStorage.getItem(TENANT));
  } catch (error) {
    $('sign-in-error').textContent =
      error instanceof ApiFailure && error.status === 401 ? 'The key was refused.' : error.message;
  }
});

$('sign-out').addEventListener('click', () => signOut());

$('tenant').addEventListener('change', async () => {
  session.tenant = $('tenant').value;
  sessionStorage.setItem(TENANT, session.tenant);
  epoch += 1;
  clearShown();
  $('key-form').reset();
  $('event-type-form').reset();
  $('audit-filter').reset();
  try {
    await loadEndpointUrls();
    await show(currentView());
  } catch (error) {
    showError(error);
  }
});

for (const button of document.querySelectorAll('nav button')) {
  button.addEventListener('click', () => show(button.dataset.view, { push: true }).catch(showError));
}

// Back, Forward and an edited address change the view too.
window.addEventListener('hashchange', () => {
  if (!session || $('app').hidden) return;
  const view = viewInAddress();
  if (view !== currentView() || location.hash !== `#${view}`) show(view).catch(showError);
});

$('delivery-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  detailAsked += 1; // a detail on its way for the list before must not come back
  $('delivery-detail').hidden = true;
  deliveries.reload(deliveryFilter()).catch(showError);
});

$('new-endpoint').addEventListener('click', () => {
  clearMessages();
  $('endpoint-form').hidden = false;
  $('endpoint-url').focus();
});

function closeEndpointForm() {
  if ($('endpoint-cancel').disabled) return; // a create is on its way
  clearMessages();
  $('endpoint-form').reset();
  $('endpoint-form').hidden = true;
  $('new-endpoint').focus();
}

$('endpoint-cancel').addEventListener('click', closeEndpointForm);
$('endpoint-form').addEventListener('keydown', (event) => {
  if (event.key === 'Escape') closeEndpointForm();
});

$('endpoint-form').addEventListener('submit', (event) => {
  event.preventDefault();
  whileDisabled($('endpoint-form').querySelector('button[type=submit]'), createEndpoint);
});

// The secret is shown once; "Done" takes it off the page.
$('secret-done').addEventListener('click', () => {
  hideSecret();
  if (!$('view-endpoints').hidden) $('new-endpoint').focus();
  else if (!$('view-keys').hidden) $('key-name').focus();
});

$('event-type-form').addEventListener('submit', (event) => {
  event.preventDefault();
  whileDisabled($('event-type-form').querySelector('button[type=submit]'), saveEventType);
});

$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  whileDisabled($('key-form').querySelector('button[type=submit]'), createKey);
});

$('audit-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  auditLog.reload(auditFilter(), auditSource()).catch(showError);
});

$('select-all-dead').addEventListener('change', () => {
  for (const box of document.querySelectorAll('#dead-rows input[type=checkbox]')) box.checked = $('select-all-dead').checked;
  updateRequeueButton();
});

$('requeue-selected').addEventListener('click', () => requeue({ delivery_ids: selectedDeadLetters() }).catch(showError));

$('deliveries-export').addEventListener('click', () =>
  whileDisabled($('deliveries-export'), () => download('/deliveries/export', deliveryFilter())),
);

$('dead-export').addEventListener('click', () =>
  whileDisabled($('dead-export'), () => download('/dead-letters/export', {})),
);

$('requeue-all').addEventListener('click', () => {
  if (window.confirm('Requeue every dead letter of this tenant?')) requeue({}).catch(showError);
});

const savedKey = sessionStorage.getItem(KEY);
if (savedKey) {
  signIn(savedKey, sessionStorage.getItem(TENANT)).catch((error) => signOut(error.message));
}
