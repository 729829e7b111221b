// Drives the dashboard as an operator would, in a real browser (Debian's Chromium through playwright-core).
// host/tests/dashboard.rs starts the server, makes three dead letters and runs this with their context in the
// environment; it checks the server's state afterwards. Exits non-zero, saying which step failed, on any
// mismatch, on a script error in the page, or on a console error (a Content-Security-Policy violation is one).
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('SWITCHYARD_URL');
const adminKey = env('ADMIN_KEY');
const tenantKey = env('TENANT_KEY');
const publishKey = env('PUBLISH_KEY');
const tenantId = env('TENANT_ID');
const endpointUrl = env('ENDPOINT_URL');
const deadIds = env('DEAD_IDS').split(',');
const chromiumPath = env('CHROMIUM');

const problems = [];
const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: ['--headless', '--no-sandbox', '--disable-gpu'],
});
let step = 'start';
const page = await browser.newPage();
page.setDefaultTimeout(10_000);
page.on('pageerror', (error) => problems.push(`page error during "${step}": ${error.message}`));
// Chromium logs every 4xx answer as a console error; the refused key and the tenant key's 403 on /tenants are
// expected, so answers are checked by status instead: a 5xx is a failure.
page.on('console', (message) => {
  if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
    problems.push(`console error during "${step}": ${message.text()}`);
  }
});
page.on('response', (response) => {
  if (response.status() >= 500) problems.push(`${response.status()} from ${response.url()} during "${step}"`);
});

function check(condition, what) {
  if (!condition) throw new Error(`${step}: ${what}`);
}

async function cardCount(status) {
  return (await page.locator(`.card[data-status="${status}"] .count`).textContent()).trim();
}

async function fitsTheWindow() {
  const width = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  check(width[0] <= width[1], `the page is ${width[0]} px wide in a ${width[1]} px window`);
}

// Clicks `button`, which saves a CSV file; returns the name the browser was given and the file's lines.
async function savedCsv(button) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
  const text = await readFile(await download.path(), 'utf8');
  return [download.suggestedFilename(), text.trim().split('\n')];
}

async function rows(tbody) {
  return page.locator(`#${tbody} tr:not(.empty):not(.loading)`).count();
}

// Shows the deliveries filter's list again and again (its answer drawn each time, `asked` in the request's
// address) until `done()` holds, for up to 10 s; `what()` says what was seen when it never does.
async function untilDeliveries(asked, done, what) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    await Promise.all([
      page.waitForResponse((r) => r.url().includes('/api/v1/deliveries?') && r.url().includes(asked)),
      page.click('#delivery-filter button[type=submit]'),
    ]);
    await page.waitForFunction(() => !document.querySelector('#delivery-rows tr.loading'));
    if (await done()) return;
    check(Date.now() < deadline, await what());
    await page.waitForTimeout(200);
  }
}

try {
  step = 'the root redirects to the dashboard';
  await page.goto(base + '/');
  check(page.url() === `${base}/dashboard/`, `landed on ${page.url()}`);
  check(await page.locator('#session').isHidden(), 'Sign out shows before signing in');

  step = 'a key that cannot go in a header is explained';
  await page.fill('#key', 'clé-secrète');
  await page.click('#sign-in-form button[type=submit]');
  await page.locator('#sign-in-error', { hasText: 'visible ASCII' }).waitFor();

  step = 'a wrong key is refused';
  await page.fill('#key', 'not-a-key');
  await page.click('#sign-in-form button[type=submit]');
  await page.locator('#sign-in-error', { hasText: 'The key was refused.' }).waitFor();
  check(await page.locator('#app').isHidden(), 'the app shows after a refused key');

  step = 'a key that may only publish is told so';
  await page.fill('#key', publishKey);
  await page.click('#sign-in-form button[type=submit]');
  await page.locator('#sign-in-error', { hasText: 'may only publish events' }).waitFor();
  check(await page.locator('#app').isHidden(), 'the app shows for a publish-only key');

  step = 'the admin signs in and sees the tenant overview';
  await page.fill('#key', adminKey);
  await page.click('#sign-in-form button[type=submit]');
  await page.locator('#app').waitFor();
  check((await page.locator('#tenant').inputValue()) === tenantId, 'the tenant picker names the tenant');
  await page.locator('.card[data-status="dead"] .count', { hasText: String(deadIds.length) }).waitFor();
  check((await cardCount('active')) === '1', `active endpoints: ${await cardCount('active')}`);
  check(await page.locator('.card[data-status="dead"]').evaluate((c) => c.classList.contains('attention')), 'dead letters are not marked for attention');
  check(await page.locator('nav button[data-view=plugins]').isVisible(), 'the admin has no Plugins tab');

  step = 'the last day counts the dead letters in its success rate';
  await page.locator('.card[data-day="dead"] .count', { hasText: String(deadIds.length) }).waitFor();
  const rate = (await page.locator('.card[data-day="success_rate"] .count').textContent()).trim();
  check(rate === '0.0 %', `success rate: ${rate}`);
  check(await page.locator('.card[data-day="success_rate"]').evaluate((c) => c.classList.contains('attention')), 'a day with dead letters is not marked for attention');
  const meanAttempt = (await page.locator('.card[data-day="mean_attempt_ms"] .count').textContent()).trim();
  check(/^\d+\.\d ms$/.test(meanAttempt), `mean attempt time: ${meanAttempt}`);
  const retryRate = (await page.locator('.card[data-day="retry_rate"] .count').textContent()).trim();
  check(retryRate === '0.0 %', `each dead letter was refused at its first attempt, yet the retry rate is ${retryRate}`);

  step = 'the event types published are counted';
  const published = page.locator('#event-type-rows tr[data-type="order.created"]');
  await published.waitFor();
  const cells = await published.locator('td').allTextContents();
  check(JSON.stringify(cells) === JSON.stringify(['order.created', String(deadIds.length), '100.0 %', String(deadIds.length)]), `event types: ${cells}`);
  check(await page.locator('#event-types-more').isHidden(), 'more types are said to be left out');

  step = 'the overview marks a day going wrong';
  // Answers made up for the thresholds: the server's own day has only dead letters.
  let madeUp = { success_rate: 0.85, mean_attempt_ms: 2500.5 };
  await page.route('**/api/v1/stats', (route) =>
    route.fulfill({
      json: {
        deliveries: { pending: 1500, delivering: 0, failed: 0, dead: 0, dropped: 0 },
        endpoints: { active: 1, paused: 0, disabled: 0 },
        count_limit: 10000,
        last_24h: { attempts: 100, failed_attempts: 20, succeeded: 85, dead: 15, retried: 5, retry_rate: 0.05, ...madeUp },
      },
    }),
  );
  await page.locator('.card.warning[data-day="success_rate"]').waitFor();
  check(await page.locator('.card.warning[data-day="mean_attempt_ms"]').isVisible(), 'attempts of 2.5 s are not marked');
  check(await page.locator('.card.warning[data-status="pending"]').isVisible(), '1,500 waiting are not marked');
  madeUp = { success_rate: 0.79, mean_attempt_ms: 1999 };
  await page.locator('.card.attention[data-day="success_rate"]').waitFor();
  check(await page.locator('.card[data-day="mean_attempt_ms"]:not(.warning)').isVisible(), 'attempts under 2 s are marked');
  madeUp = { success_rate: 0.95, mean_attempt_ms: 12 };
  await page.locator('.card[data-day="success_rate"]:not(.warning):not(.attention)').waitFor();
  await page.unroute('**/api/v1/stats');

  step = 'the dead letters are listed';
  await page.click('nav button[data-view=dead-letters]');
  await page.locator('#dead-rows tr[data-id]').first().waitFor();
  const listed = await page.locator('#dead-rows tr[data-id]').evaluateAll((trs) => trs.map((tr) => tr.dataset.id));
  check(JSON.stringify([...listed].sort()) === JSON.stringify([...deadIds].sort()), `listed ${listed}`);
  const firstRow = page.locator(`#dead-rows tr[data-id="${deadIds[0]}"]`);
  check((await firstRow.textContent()).includes('HTTP 400'), 'the last result is not shown');
  check((await firstRow.textContent()).includes(endpointUrl), 'the endpoint is not named by its URL');

  step = 'the dead letters are saved as CSV';
  const [deadFile, deadLines] = await savedCsv('#dead-export');
  check(/^dead-letters-\d{8}T\d{6}Z\.csv$/.test(deadFile), `saved as ${deadFile}`);
  check(deadLines[0].startsWith('id,event_id,event_type,endpoint_id,status,'), `header: ${deadLines[0]}`);
  const deadInFile = deadLines.filter((line) => line.startsWith('dlv_')).map((line) => line.split(',')[0]);
  check(JSON.stringify(deadInFile.sort()) === JSON.stringify([...deadIds].sort()), `saved ${deadLines}`);

  step = 'one dead letter is requeued';
  check(await page.locator('#requeue-selected').isDisabled(), 'requeue is enabled with nothing selected');
  await firstRow.locator('input[type=checkbox]').check();
  await page.click('#requeue-selected');
  await page.locator('#notice', { hasText: 'Requeued 1 dead letter.' }).waitFor();
  await page.waitForFunction((n) => document.querySelectorAll('#dead-rows tr[data-id]').length === n, deadIds.length - 1);

  step = 'the rest are requeued at once';
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#requeue-all');
  await page.locator('#notice', { hasText: `Requeued ${deadIds.length - 1} dead letters.` }).waitFor();
  await page.locator('#dead-rows tr.empty').waitFor();

  step = 'the deliveries succeed and show their attempts';
  await page.click('nav button[data-view=deliveries]');
  await page.selectOption('#delivery-status', 'succeeded');
  await untilDeliveries(
    'status=succeeded',
    async () => (await rows('delivery-rows')) === deadIds.length,
    async () => `succeeded deliveries: ${await rows('delivery-rows')}`,
  );
  await page.locator(`#delivery-rows tr[data-id="${deadIds[0]}"] button`).click();
  await page.locator('#attempt-rows tr').nth(1).waitFor();
  const attempts = await page.locator('#attempt-rows tr').evaluateAll((trs) => trs.map((tr) => tr.textContent));
  check(attempts.length === 2, `attempts: ${attempts}`);
  check(attempts[0].includes('400') && attempts[0].includes('dead'), `first attempt: ${attempts[0]}`);
  check(attempts[1].includes('204') && attempts[1].includes('succeeded'), `second attempt: ${attempts[1]}`);

  step = 'the deliveries of the last hour are the same ones';
  await page.selectOption('#delivery-since', '1');
  await untilDeliveries(
    'since=',
    async () => (await rows('delivery-rows')) === deadIds.length,
    async () => `succeeded deliveries of the last hour: ${await rows('delivery-rows')}`,
  );

  step = 'the filtered deliveries are saved as CSV';
  const [deliveriesFile, deliveryLines] = await savedCsv('#deliveries-export');
  check(deliveriesFile.startsWith('deliveries-'), `saved as ${deliveriesFile}`);
  const saved = deliveryLines.filter((line) => line.startsWith('dlv_'));
  check(saved.length === deadIds.length && saved.every((line) => line.includes(',succeeded,')), `saved ${deliveryLines}`);

  step = 'each endpoint shows its last 24 hours: the dead letters, then their requeues delivered';
  await page.click('nav button[data-view=endpoints]');
  await page.locator('#endpoint-rows td.day[data-filled]').first().waitFor();
  const dayCell = page.locator('#endpoint-rows tr[data-id] td.day').first();
  const day = (await dayCell.textContent()).trim();
  check(day === `50.0 % of ${2 * deadIds.length}`, `last 24 h: ${day}`);
  const dayTitle = await dayCell.getAttribute('title');
  check(/ms each on average/.test(dayTitle), `last 24 h's title: ${dayTitle}`);
  check(await dayCell.evaluate((c) => c.classList.contains('attention')), 'an endpoint with dead letters is not marked for attention');

  step = 'a test event is sent to the endpoint and delivered';
  await page.click('nav button[data-view=endpoints]');
  const endpointRow = page.locator('#endpoint-rows tr[data-id]').first();
  await endpointRow.locator('button', { hasText: 'Send test' }).click();
  await page.locator('#notice', { hasText: 'Test event evt_' }).waitFor();
  await page.click('nav button[data-view=deliveries]');
  await page.fill('#delivery-event-type', 'switchyard.test');
  await untilDeliveries(
    'event_type=switchyard.test',
    async () => (await page.locator('#delivery-rows .status-succeeded').count()) === 1,
    async () => 'the test delivery did not succeed',
  );
  await page.fill('#delivery-event-type', '');

  step = 'the endpoint is paused';
  await page.click('nav button[data-view=endpoints]');
  check((await endpointRow.textContent()).includes(endpointUrl), 'the endpoint row has no URL');
  // The description is 600 characters without a space: it wraps instead of widening the page.
  await fitsTheWindow();
  await endpointRow.locator('button', { hasText: 'Pause' }).click();
  await page.locator('#endpoint-rows .status-paused').waitFor();
  await page.locator('#endpoint-rows button', { hasText: 'Activate' }).waitFor();

  step = 'an endpoint with an invalid filter is refused, naming the field';
  const secondUrl = `${endpointUrl}/second`;
  await page.click('#new-endpoint');
  await page.fill('#endpoint-url', secondUrl);
  await page.fill('#endpoint-description', 'second');
  await page.fill('#endpoint-subscriptions', 'order.*\norder.created $[?@.data.n >');
  await page.click('#endpoint-form button[type=submit]');
  await page.locator('#error', { hasText: 'Subscriptions, line 2: ' }).waitFor();
  const refused = await page.locator('#error').textContent();
  check(!refused.includes('400') && !refused.includes('subscriptions['), `the error speaks HTTP or JSON: ${refused}`);
  check(await page.locator('#endpoint-subscriptions').evaluate((box) => box === document.activeElement), 'the field at fault has no focus');

  step = 'an endpoint is created, and its secret shown once';
  await page.fill('#endpoint-subscriptions', 'order.*\norder.created $[?@.data.n > 1]');
  await page.click('#endpoint-form button[type=submit]');
  await page.locator('#secret-once').waitFor();
  const firstSecret = await page.locator('#secret-value').textContent();
  check(/^whsec_[A-Za-z0-9+/=]{32,}$/.test(firstSecret), `secret: ${firstSecret}`);
  const second = page.locator('#endpoint-rows tr', { hasText: secondUrl });
  await second.waitFor();
  check((await second.textContent()).includes('order.created $[?@.data.n > 1]'), 'the filter is not listed');
  await page.click('#secret-done');
  check((await page.locator('#secret-value').textContent()) === '', 'the secret stays on the page');

  step = "the new endpoint's secret is rotated";
  page.once('dialog', (dialog) => dialog.accept());
  await second.locator('button', { hasText: 'Rotate secret' }).click();
  await page.locator('#notice', { hasText: 'rotated' }).waitFor();
  const rotated = await page.locator('#secret-value').textContent();
  check(rotated.startsWith('whsec_') && rotated !== firstSecret, 'no new secret shown');

  step = 'an endpoint signing with an Ed25519 key shows its public key, at creation and rotation';
  const keyedUrl = `${endpointUrl}/keyed`;
  await page.click('#secret-done');
  await page.click('#new-endpoint');
  await page.fill('#endpoint-url', keyedUrl);
  await page.selectOption('#endpoint-signing', 'asymmetric');
  await page.click('#endpoint-form button[type=submit]');
  await page.locator('#secret-label', { hasText: 'public key' }).waitFor();
  const publicKey = await page.locator('#secret-value').textContent();
  check(/^whpk_[A-Za-z0-9+/]{43}=$/.test(publicKey), `public key: ${publicKey}`);
  const keyed = page.locator('#endpoint-rows tr', { hasText: keyedUrl });
  page.once('dialog', (dialog) => dialog.accept());
  await keyed.locator('button', { hasText: 'Rotate secret' }).click();
  await page.waitForFunction((old) => {
    const shown = document.querySelector('#secret-value').textContent;
    return shown.startsWith('whpk_') && shown !== old;
  }, publicKey);
  await page.click('#secret-done');
  page.once('dialog', (dialog) => dialog.accept());
  await keyed.locator('button', { hasText: 'Delete' }).click();
  await page.locator('#notice', { hasText: 'deleted' }).waitFor();

  step = 'the new endpoint is deleted';
  page.once('dialog', (dialog) => dialog.accept());
  await second.locator('button', { hasText: 'Delete' }).click();
  await page.locator('#notice', { hasText: 'deleted' }).waitFor();
  check((await page.locator('#endpoint-rows tr', { hasText: secondUrl }).count()) === 0, 'the row remains');

  step = 'a key with a bad name is refused, naming the field';
  await page.click('nav button[data-view=keys]');
  await page.locator('#key-rows tr', { hasText: 'checkout' }).waitFor();
  await page.click('#key-form button[type=submit]');
  await page.locator('#error', { hasText: 'Name: ' }).waitFor();
  check(!(await page.locator('#error').textContent()).includes('400'), 'the error names the status code');
  check(await page.locator('#key-name').evaluate((box) => box === document.activeElement), 'the name has no focus');

  step = 'a publish key is created, and shown once';
  // A name of 150 letters without a space: the panel and the notice that show it wrap.
  await page.fill('#key-name', `billing-service-${'x'.repeat(150)}`);
  await page.click('#key-form button[type=submit]');
  await page.locator('#secret-once', { hasText: 'scope publish' }).waitFor();
  await fitsTheWindow();
  const newKey = await page.locator('#secret-value').textContent();
  check(/^syp_[A-Za-z0-9_-]{43}$/.test(newKey), `key: ${newKey}`);
  const billing = page.locator('#key-rows tr', { hasText: 'billing-service' });
  await billing.waitFor();
  check((await billing.textContent()).includes('publish'), 'the scope is not listed');
  check(!(await page.locator('#key-rows').textContent()).includes(newKey), 'the list shows the key');
  await page.click('#secret-done');
  check((await page.locator('#secret-value').textContent()) === '', 'the key stays on the page');

  step = 'a key limited to networks lists them, and a network that does not parse is named';
  await page.fill('#key-name', 'office-reports');
  await page.selectOption('#key-scope', 'read');
  await page.fill('#key-networks', '203.0.113.0/24, office');
  await page.click('#key-form button[type=submit]');
  await page.locator('#error', { hasText: 'Networks: ' }).waitFor();
  check(await page.locator('#key-networks').evaluate((box) => box === document.activeElement), 'the networks have no focus');
  await page.fill('#key-networks', '203.0.113.0/24 2001:db8::7');
  await page.click('#key-form button[type=submit]');
  await page.locator('#secret-once', { hasText: 'scope read' }).waitFor();
  await page.click('#secret-done');
  const office = page.locator('#key-rows tr', { hasText: 'office-reports' });
  await office.waitFor();
  check((await office.textContent()).includes('203.0.113.0/24 2001:db8::7/128'), 'the networks are not listed');
  check((await billing.textContent()).includes('anywhere'), 'a key without networks does not say anywhere');

  step = "a key's networks change in place, and a bad one is named";
  page.once('dialog', (dialog) => dialog.accept('198.51.100.0/24 nowhere'));
  await office.locator('button', { hasText: 'Networks' }).click();
  await page.locator('#error', { hasText: 'nowhere' }).waitFor();
  page.once('dialog', (dialog) => dialog.accept('198.51.100.0/24'));
  await office.locator('button', { hasText: 'Networks' }).click();
  await page.locator('#notice', { hasText: 'now works from 198.51.100.0/24' }).waitFor();
  await page.locator('#key-rows tr', { hasText: 'office-reports' }).filter({ hasText: '198.51.100.0/24' }).waitFor();
  check(!(await office.textContent()).includes('2001:db8::7'), 'the old networks are still listed');

  step = 'the key is revoked';
  page.once('dialog', (dialog) => dialog.accept());
  await billing.locator('button', { hasText: 'Revoke' }).click();
  await page.locator('#notice', { hasText: 'revoked' }).waitFor();
  await page.locator('#key-rows tr', { hasText: 'billing-service' }).locator('button:disabled', { hasText: 'Revoke' }).waitFor();
  const moveRevoked = page.locator('#key-rows tr', { hasText: 'billing-service' }).locator('button', { hasText: 'Networks' });
  check(await moveRevoked.isDisabled(), "a revoked key's networks can still be changed");
  await fitsTheWindow();

  step = 'every id on the page is used once';
  const repeatedIds = await page.evaluate(() => {
    const ids = [...document.querySelectorAll('[id]')].map((element) => element.id);
    return ids.filter((id, i) => ids.indexOf(id) !== i);
  });
  check(repeatedIds.length === 0, `repeated: ${repeatedIds.join(', ')}`);

  step = 'an event type gets a schema; what is not JSON, or not a schema, is named';
  await page.click('nav button[data-view=event-types]');
  const orderCreated = page.locator('#event-type-list tr', { hasText: 'order.created' });
  await orderCreated.waitFor();
  check((await orderCreated.textContent()).includes('—'), 'a published type shows a schema');
  await orderCreated.locator('button', { hasText: 'Edit' }).click();
  check((await page.inputValue('#event-type-name')) === 'order.created', 'Edit does not fill the name');
  await page.fill('#event-type-schema', '{"type": "object",');
  await page.click('#event-type-form button[type=submit]');
  await page.locator('#error', { hasText: 'JSON Schema: not JSON' }).waitFor();
  await page.fill('#event-type-schema', '{"type": "integr"}');
  await page.click('#event-type-form button[type=submit]');
  await page.locator('#error', { hasText: 'JSON Schema: is not a valid JSON Schema' }).waitFor();
  check(await page.locator('#event-type-schema').evaluate((box) => box === document.activeElement), 'the schema has no focus');
  await page.fill('#event-type-description', 'An order was placed');
  await page.fill('#event-type-schema', '{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}');
  await page.click('#event-type-form button[type=submit]');
  await page.locator('#notice', { hasText: 'order.created saved, with a schema' }).waitFor();
  await page.locator('#event-type-list tr', { hasText: 'order.created' }).filter({ hasText: 'An order was placed' }).waitFor();
  check((await page.inputValue('#event-type-schema')) === '', 'the form keeps the saved schema');
  await orderCreated.locator('summary', { hasText: 'JSON Schema' }).click();
  check((await orderCreated.locator('pre').textContent()).includes('"required": [\n    "n"\n  ]'), 'the schema is not shown');

  step = 'a publish that does not match the schema is refused';
  const refusedPublish = await page.evaluate(async (key) => {
    const answer = await fetch('/api/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'order.created', data: { n: 'seven' } }),
    });
    return [answer.status, (await answer.json()).error];
  }, publishKey);
  check(refusedPublish[0] === 422 && refusedPublish[1].code === 'schema_mismatch', JSON.stringify(refusedPublish));

  step = 'an emptied schema is removed';
  await orderCreated.locator('button', { hasText: 'Edit' }).click();
  check((await page.inputValue('#event-type-schema')).includes('"integer"'), 'Edit does not fill the schema');
  await page.fill('#event-type-schema', '');
  await page.click('#event-type-form button[type=submit]');
  await page.locator('#notice', { hasText: 'order.created saved, with no schema' }).waitFor();
  await page.locator('#event-type-list tr', { hasText: 'order.created' }).filter({ hasNot: page.locator('details') }).waitFor();
  await fitsTheWindow();

  step = 'the audit log shows the actions, and filters them';
  await page.click('nav button[data-view=audit]');
  await page.locator('#audit-rows tr', { hasText: 'api_key.revoked' }).waitFor();
  await page.fill('#audit-action', 'endpoint.deleted');
  await page.click('#audit-filter button[type=submit]');
  // The two endpoints made in the dashboard were deleted.
  await page.waitForFunction(() => {
    const shown = [...document.querySelectorAll('#audit-rows tr')];
    return shown.length === 2 && shown.every((row) => row.textContent.includes('endpoint.deleted'));
  });

  step = "the admin reads the server's own audit entries";
  await page.fill('#audit-action', '');
  await page.check('#audit-server');
  const [serverEntries] = await Promise.all([
    page.waitForResponse((r) => r.url().includes('/api/v1/audit-log?')),
    page.click('#audit-filter button[type=submit]'),
  ]);
  check(!('switchyard-tenant' in serverEntries.request().headers()), 'the request named a tenant');
  await page.locator('#audit-rows tr.empty').waitFor();

  step = 'the overview follows';
  await page.click('nav button[data-view=overview]');
  await page.locator('.card[data-status="paused"] .count', { hasText: '1' }).waitFor();
  check((await cardCount('dead')) === '0', `dead letters: ${await cardCount('dead')}`);

  step = 'the plugins view answers';
  await page.click('nav button[data-view=plugins]');
  await page.locator('#plugin-rows tr').first().waitFor();

  step = 'signing out leaves nothing of the session on the page';
  await page.click('#sign-out');
  await page.locator('#sign-in').waitFor();
  check((await page.locator('.card, #endpoint-rows tr, #delivery-rows tr, #dead-rows tr').count()) === 0, 'rows or cards remain');
  check((await page.evaluate(() => sessionStorage.length)) === 0, 'the key stays in session storage');

  step = 'a tenant key signs in without the admin views';
  await page.fill('#key', tenantKey);
  await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/v1/stats') && r.request().headers()['authorization'] === `Bearer ${tenantKey}`),
    page.click('#sign-in-form button[type=submit]'),
  ]);
  await page.locator('.card[data-status="paused"] .count', { hasText: '1' }).waitFor();
  check(await page.locator('#tenant-picker').isHidden(), 'a tenant key sees the tenant picker');
  check(await page.locator('nav button[data-view=plugins]').isHidden(), 'a tenant key sees the Plugins tab');

  step = 'Back returns to the view before';
  await page.click('nav button[data-view=dead-letters]');
  await page.locator('#dead-rows tr.empty').waitFor();
  await page.goBack();
  await page.locator('#view-overview').waitFor();
  check(page.url().endsWith('#overview'), `at ${page.url()}`);

  step = 'a reload keeps the session and the view';
  await page.click('nav button[data-view=endpoints]');
  await page.locator('#endpoint-rows .status-paused').waitFor();
  await page.reload();
  await page.locator('#endpoint-rows .status-paused').waitFor();
  check(await page.locator('#view-overview').isHidden(), 'the reload went back to the overview');
} catch (error) {
  problems.push(error.message.startsWith(step) ? error.message : `${step}: ${error.message}`);
} finally {
  await browser.close();
}

if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log('dashboard: every step passed');
