/**
 * The web dashboard in a real browser (Debian's chromium, headless, driven by
 * playwright-core): a real head with --http-port and two real nodes, and an
 * `orion build --head` whose graph the page draws live from server-sent events.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, startHeadProcess, startNodeProcess, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { copyFixture, orionBuild, scratch } from '../helpers/build.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO, 'test-artifacts');

describe('the dashboard in a real browser', () => {
  let dir: string;
  let profileDir: string;
  let head: Daemon & { address: string };
  let url: string;
  const nodes: Daemon[] = [];
  let context: BrowserContext | undefined;
  let page: Page;

  beforeAll(async () => {
    // Fail, never skip: a machine without the browser must be fixed, not ignored.
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run scripts/install-browser.sh (apt-get install -y chromium) to run the dashboard test`);
    dir = await scratch('dashboard');
    head = await startHeadProcess(path.join(dir, 'head'), ['--heartbeat-timeout', '2s', '--http-port', '0']);
    url = await waitFor('the dashboard address', () => /orion head dashboard on (\S+)/.exec(head.output())?.[1]);
    for (const id of ['n1', 'n2']) nodes.push(startNodeProcess(head.address, id, path.join(dir, id), ['--slots', '2', '--no-sandbox']));
    await waitForActiveNodes(head.address, 2);
    profileDir = await mkdtemp(path.join(os.tmpdir(), 'orion-chromium-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
      viewport: { width: 1400, height: 900 },
    });
    page = context.pages()[0] ?? (await context.newPage());
  });

  afterAll(async () => {
    await context?.close();
    for (const n of nodes) await n.kill('SIGKILL');
    await head?.kill('SIGKILL');
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('shows the nodes, then draws the build graph live until every action is done', async () => {
    await page.goto(url);
    await page.locator('.node[data-node="n1"][data-status="active"]').waitFor({ timeout: 15_000 });
    await page.locator('.node[data-node="n2"][data-status="active"]').waitFor({ timeout: 15_000 });
    await page.locator('#live[data-connected="true"]').waitFor({ timeout: 15_000 });
    expect(await page.locator('#nodes').innerText()).toContain('0 / 2 slots busy');

    // Record every state an action of the graph shows, to see that the page changed live.
    await page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { seenStates: string[] }).seenStates = seen;
      new MutationObserver((records) => {
        for (const r of records) {
          if (r.type === 'attributes') seen.push((r.target as Element).getAttribute('data-state') ?? '');
          for (const n of r.addedNodes) if (n instanceof Element && n.matches('g.action')) seen.push(n.getAttribute('data-state') ?? '');
        }
      }).observe(document.getElementById('dag')!, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
    });

    const proj = await copyFixture('make-project', path.join(dir, 'proj'));
    const build = await orionBuild(proj, { cacheDir: path.join(dir, 'cache'), head: head.address });
    expect(build.code, build.stderr).toBe(0);
    const detail = (await (await fetch(`${url}api/builds`)).json()) as { builds: { id: string; total: number }[] };
    expect(detail.builds).toHaveLength(1);
    const total = detail.builds[0]!.total;
    expect(total).toBeGreaterThanOrEqual(5);

    // The page follows the new build by itself; every action of it turns "done".
    await page.waitForFunction(
      (n) => {
        const acts = [...document.querySelectorAll('#dag g.action')];
        return acts.length === n && acts.every((a) => a.getAttribute('data-state') === 'done');
      },
      total,
      { timeout: 20_000 },
    );
    expect(await page.locator('button.build.selected .build-id').innerText()).toBe(detail.builds[0]!.id);
    expect(await page.locator('#dag .edges path').count()).toBeGreaterThan(0);
    const labels = await page.locator('#dag g.action text:not(.where)').allTextContents();
    expect(labels.some((l) => l.startsWith('CC '))).toBe(true);
    const where = await page.locator('#dag g.action .where').allTextContents();
    expect(where.every((w) => w === 'n1' || w === 'n2')).toBe(true);
    // Pushed, not polled: the graph saw actions before they were done.
    const seen = await page.evaluate(() => (window as unknown as { seenStates: string[] }).seenStates);
    expect(seen.some((s) => s === 'queued' || s === 'running')).toBe(true);

    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
  });
});
