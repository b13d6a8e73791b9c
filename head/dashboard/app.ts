/**
 * The dashboard's browser code. It runs in the page, not in Node: page.ts embeds
 * `dashboardApp.toString()`, so this function must use nothing from outside its body.
 * State comes from one fetch per view and then only from server-sent events.
 */
export function dashboardApp(): void {
  type State = 'queued' | 'running' | 'cached' | 'done' | 'failed';
  interface Action {
    id: string;
    label: string;
    deps: string[];
    state: State;
    nodeId?: string;
    queuedAt: number;
    startedAt?: number;
    endedAt?: number;
  }
  interface Build {
    id: string;
    startedAt: number;
    lastActivity: number;
    inProgress: boolean;
    counts: Record<State, number>;
    total: number;
  }
  interface Node {
    id: string;
    address: string;
    status: string;
    slots: number;
    running: number;
    load: number;
  }

  const $ = (id: string) => document.getElementById(id)!;
  const SVG = 'http://www.w3.org/2000/svg';
  const builds = new Map<string, Build>();
  let selected: string | undefined = new URLSearchParams(location.hash.slice(1)).get('build') ?? undefined;
  let followLatest = selected === undefined;
  let actions = new Map<string, Action>();
  let pending: { buildId: string; action: Action }[] | undefined;
  let layoutQueued = false;
  const elements = new Map<string, SVGGElement>();

  const esc = (s: string) => s.replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
  const ago = (t: number) => {
    const s = Math.max(0, (Date.now() - t) / 1000);
    return s < 60 ? s.toFixed(0) + 's ago' : s < 3600 ? (s / 60).toFixed(0) + 'm ago' : (s / 3600).toFixed(1) + 'h ago';
  };

  function renderNodes(nodes: Node[]) {
    const el = $('nodes');
    if (nodes.length === 0) {
      el.innerHTML = '<p class="empty">No nodes registered.</p>';
      return;
    }
    el.innerHTML = nodes
      .map((n) => {
        const pct = Math.round((100 * n.running) / Math.max(1, n.slots));
        return (
          '<div class="node" data-node="' + esc(n.id) + '" data-status="' + esc(n.status) + '">' +
          '<div class="node-head"><span class="dot"></span><b>' + esc(n.id) + '</b><span class="status">' + esc(n.status) + '</span></div>' +
          '<div class="bar"><div style="width:' + pct + '%"></div></div>' +
          '<div class="node-foot">' + n.running + ' / ' + n.slots + ' slots busy · load ' + n.load.toFixed(2) + (n.address ? ' · ' + esc(n.address) : '') + '</div></div>'
        );
      })
      .join('');
  }

  function renderBuilds() {
    const el = $('builds');
    const list = [...builds.values()].sort((a, b) => b.startedAt - a.startedAt);
    if (list.length === 0) {
      el.innerHTML = '<p class="empty">No builds yet. Run <code>orion build --head HOST:PORT</code>.</p>';
      return;
    }
    el.innerHTML = list
      .map((b) => {
        const c = b.counts;
        return (
          '<button class="build' + (b.id === selected ? ' selected' : '') + '" data-build="' + esc(b.id) + '" data-in-progress="' + b.inProgress + '">' +
          '<span class="build-id">' + esc(b.id) + '</span>' +
          '<span class="build-state">' + (b.inProgress ? 'in progress' : 'idle') + ' · started ' + ago(b.startedAt) + '</span>' +
          '<span class="counts"><i class="s-queued">' + c.queued + ' queued</i><i class="s-running">' + c.running + ' running</i><i class="s-done">' + c.done + ' done</i><i class="s-cached">' + c.cached + ' cached</i><i class="s-failed">' + c.failed + ' failed</i></span>' +
          '</button>'
        );
      })
      .join('');
    el.querySelectorAll<HTMLButtonElement>('button.build').forEach((btn) =>
      btn.addEventListener('click', () => {
        followLatest = false;
        void select(btn.dataset.build!);
      }),
    );
  }

  let buildsQueued = false;
  function scheduleBuilds() {
    if (buildsQueued) return;
    buildsQueued = true;
    requestAnimationFrame(() => {
      buildsQueued = false;
      renderBuilds();
    });
  }

  async function select(id: string, force = false) {
    if (id === selected && elements.size > 0 && !force) return;
    selected = id;
    history.replaceState(null, '', '#build=' + encodeURIComponent(id));
    actions = new Map();
    pending = [];
    renderBuilds();
    scheduleLayout();
    const res = await fetch('/api/builds/' + encodeURIComponent(id));
    if (selected !== id) return;
    if (res.ok) {
      const detail = (await res.json()) as { actions: Action[] };
      for (const a of detail.actions) actions.set(a.id, a);
    }
    const buffered = pending ?? [];
    pending = undefined;
    for (const ev of buffered) applyAction(ev.buildId, ev.action);
    scheduleLayout();
  }

  function applyAction(buildId: string, a: Action) {
    if (buildId !== selected) return;
    if (pending) {
      pending.push({ buildId, action: a });
      return;
    }
    const before = actions.get(a.id);
    actions.set(a.id, a);
    const g = elements.get(a.id);
    if (!before || !g || before.deps.join(',') !== a.deps.join(',')) return scheduleLayout();
    setState(g, a);
  }

  function setState(g: SVGGElement, a: Action) {
    g.setAttribute('data-state', a.state);
    g.querySelector('title')!.textContent = a.label + ' — ' + a.state + (a.nodeId ? ' on ' + a.nodeId : '') + (a.endedAt && a.startedAt ? ' (' + ((a.endedAt - a.startedAt) / 1000).toFixed(2) + 's)' : '');
    const where = g.querySelector('.where')!;
    where.textContent = a.state === 'cached' ? 'cache' : a.nodeId ?? '';
  }

  function scheduleLayout() {
    if (layoutQueued) return;
    layoutQueued = true;
    requestAnimationFrame(() => {
      layoutQueued = false;
      layout();
    });
  }

  /** Layered drawing: each action in the column of its longest chain of dependencies. */
  function layout() {
    const svg = $('dag') as unknown as SVGSVGElement;
    const summary = $('dag-summary');
    svg.replaceChildren();
    elements.clear();
    const b = selected ? builds.get(selected) : undefined;
    summary.textContent = selected ? 'Build ' + selected + (b ? ' · ' + (b.inProgress ? 'in progress' : 'idle') : '') + ' · ' + actions.size + ' actions' : 'No build selected.';
    if (actions.size === 0) {
      svg.setAttribute('width', '0');
      svg.setAttribute('height', '0');
      return;
    }
    const depth = new Map<string, number>();
    const visiting = new Set<string>();
    const depthOf = (id: string): number => {
      const known = depth.get(id);
      if (known !== undefined) return known;
      if (visiting.has(id)) return 0;
      visiting.add(id);
      let d = 0;
      for (const dep of actions.get(id)!.deps) if (actions.has(dep)) d = Math.max(d, depthOf(dep) + 1);
      visiting.delete(id);
      depth.set(id, d);
      return d;
    };
    const columns: Action[][] = [];
    for (const a of [...actions.values()].sort((x, y) => x.queuedAt - y.queuedAt || x.label.localeCompare(y.label))) {
      const d = depthOf(a.id);
      (columns[d] ??= []).push(a);
    }
    const W = 190;
    const H = 30;
    const GX = 60;
    const GY = 10;
    const pos = new Map<string, { x: number; y: number }>();
    columns.forEach((col, ci) => col.forEach((a, ri) => pos.set(a.id, { x: 10 + ci * (W + GX), y: 10 + ri * (H + GY) })));
    const rows = Math.max(...columns.map((c) => c?.length ?? 0));
    svg.setAttribute('width', String(20 + columns.length * (W + GX) - GX));
    svg.setAttribute('height', String(20 + rows * (H + GY) - GY));
    const edges = document.createElementNS(SVG, 'g');
    edges.setAttribute('class', 'edges');
    for (const a of actions.values()) {
      const to = pos.get(a.id)!;
      for (const dep of a.deps) {
        const from = pos.get(dep);
        if (!from) continue;
        const path = document.createElementNS(SVG, 'path');
        const x1 = from.x + W;
        const y1 = from.y + H / 2;
        const x2 = to.x;
        const y2 = to.y + H / 2;
        path.setAttribute('d', 'M' + x1 + ',' + y1 + ' C' + (x1 + GX / 2) + ',' + y1 + ' ' + (x2 - GX / 2) + ',' + y2 + ' ' + x2 + ',' + y2);
        path.setAttribute('data-from', dep);
        path.setAttribute('data-to', a.id);
        edges.appendChild(path);
      }
    }
    svg.appendChild(edges);
    for (const a of actions.values()) {
      const p = pos.get(a.id)!;
      const g = document.createElementNS(SVG, 'g') as SVGGElement;
      g.setAttribute('class', 'action');
      g.setAttribute('data-id', a.id);
      g.setAttribute('transform', 'translate(' + p.x + ',' + p.y + ')');
      const title = document.createElementNS(SVG, 'title');
      const rect = document.createElementNS(SVG, 'rect');
      rect.setAttribute('width', String(W));
      rect.setAttribute('height', String(H));
      rect.setAttribute('rx', '5');
      const text = document.createElementNS(SVG, 'text');
      text.setAttribute('x', '8');
      text.setAttribute('y', '19');
      text.textContent = a.label.length > 24 ? a.label.slice(0, 23) + '…' : a.label;
      const where = document.createElementNS(SVG, 'text');
      where.setAttribute('class', 'where');
      where.setAttribute('x', String(W - 6));
      where.setAttribute('y', '19');
      where.setAttribute('text-anchor', 'end');
      g.append(title, rect, text, where);
      svg.appendChild(g);
      elements.set(a.id, g);
      setState(g, a);
    }
  }

  function onBuild(b: Build) {
    const isNew = !builds.has(b.id);
    builds.set(b.id, b);
    if (followLatest && isNew && [...builds.values()].every((x) => x.startedAt <= b.startedAt)) void select(b.id);
    else scheduleBuilds();
  }

  function connect() {
    const es = new EventSource('/api/events');
    es.addEventListener('open', () => $('live').setAttribute('data-connected', 'true'));
    es.addEventListener('error', () => $('live').setAttribute('data-connected', 'false'));
    es.addEventListener('nodes', (ev) => renderNodes(JSON.parse((ev as MessageEvent).data) as Node[]));
    es.addEventListener('builds', (ev) => {
      const list = JSON.parse((ev as MessageEvent).data) as Build[];
      for (const b of list) builds.set(b.id, b);
      const latest = list.sort((a, b) => b.startedAt - a.startedAt)[0];
      // Sent on every (re)connection: whatever happened while disconnected is fetched again.
      if (selected) void select(selected, true);
      else if (latest) void select(latest.id);
      else renderBuilds();
    });
    es.addEventListener('build', (ev) => onBuild(JSON.parse((ev as MessageEvent).data) as Build));
    es.addEventListener('action', (ev) => {
      const { buildId, action } = JSON.parse((ev as MessageEvent).data) as { buildId: string; action: Action };
      applyAction(buildId, action);
    });
  }

  connect();
  setInterval(renderBuilds, 5000);
}
