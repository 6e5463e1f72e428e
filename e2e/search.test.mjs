// The search box in headless Chromium: `tag:launch type:demo brandId:b1` terms, the list they
// select, the search kept in the URL (a shared link opens the same search), and a term the page
// cannot read said next to the box (docs/spec.md §19).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { axe, browserAndService, openPage, row, shot } from './harness.mjs';
import { parseSearch } from '../public/js/search.js';

const setup = browserAndService();

async function create(user, payload, tags) {
  const reply = await setup.jobs.api('create', { method: 'POST', body: { type: 'demo', userId: user, payload: { steps: 1, stepMs: 0, ...payload }, tags } });
  assert.equal(reply.status, 201, JSON.stringify(reply.body));
  return reply.body.taskId;
}

test('search terms read as list parameters, and the ones that cannot be read say why', () => {
  const cases = [
    ['tag:launch type:demo brandId:b1', { tag: 'launch', type: 'demo', 'payload.brandId': 'b1' }, null],
    ['after:2026-12-01 note:"two words"', { createdAfter: '2026-12-01T00:00:00Z', 'payload.note': 'two words' }, null],
    // A name an object inherits is a payload field like any other, not a parameter.
    ['constructor:x toString:y', { 'payload.constructor': 'x', 'payload.toString': 'y' }, null],
    ['tag:a tag:b', {}, 'tag is given twice.'],
    ['a:1 b:2 c:3 d:4', {}, 'At most 3 payload fields per search.'],
    ['launch', {}, '"launch" is not a search term: write name:value, as tag:launch or brandId:b1.'],
  ];
  for (const [text, params, problem] of cases) {
    assert.deepEqual(parseSearch(text), { params, problem }, text);
  }
});

test('a search by tag and payload field lists only its matches, kept in the URL for sharing', async () => {
  const user = 'searcher';
  const match = await create(user, { brandId: 'b1' }, ['launch']);
  const otherBrand = await create(user, { brandId: 'b2' }, ['launch']);
  const untagged = await create(user, { brandId: 'b1' }, []);
  const page = await openPage(setup.browser, setup.jobs, user);
  for (const id of [match, otherBrand, untagged]) await row(page, id).waitFor();
  assert.match(await row(page, match).locator('td').nth(2).textContent(), /launch/, 'tags show next to the type');

  await page.getByLabel('Search', { exact: true }).fill('tag:launch brandId:b1');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await row(page, otherBrand).waitFor({ state: 'detached' });
  await row(page, untagged).waitFor({ state: 'detached' });
  await row(page, match).waitFor();
  assert.equal(new URL(page.url()).searchParams.get('q'), 'tag:launch brandId:b1');
  await shot(page, 'search-1-results');
  const { violations } = await axe(page);
  assert.deepEqual(violations, [], JSON.stringify(violations, null, 1));

  // The link opens the same search.
  const shared = await page.context().newPage();
  await shared.goto(page.url());
  await row(shared, match).waitFor();
  assert.equal(await shared.getByLabel('Search', { exact: true }).inputValue(), 'tag:launch brandId:b1');
  assert.equal(await row(shared, untagged).count(), 0);

  // Clear shows everything again.
  await page.getByRole('button', { name: 'Clear' }).click();
  await row(page, untagged).waitFor();
  assert.equal(new URL(page.url()).searchParams.get('q'), null);
  await page.context().close();
});

test('a term the page cannot read is said next to the box; the API\'s refusal is shown too', async () => {
  const user = 'bad-searcher';
  const page = await openPage(setup.browser, setup.jobs, user);
  const box = page.getByLabel('Search', { exact: true });
  await box.fill('launch');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  const problem = page.locator('#search-problem');
  await problem.waitFor();
  assert.match(await problem.textContent(), /"launch" is not a search term: write name:value/);
  assert.equal(await box.getAttribute('aria-invalid'), 'true');

  await box.fill('after:yesterday');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.getByText(/createdAfter must be an RFC 3339 time/).waitFor();
  assert.equal(await problem.isHidden(), true);
  await page.context().close();
});
