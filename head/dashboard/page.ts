/** The dashboard page, embedded so `make build` ships it inside dist/ with the rest of the head. */
import { dashboardApp } from './app.js';

const STYLE = `
:root { --bg:#0f1419; --panel:#171d24; --line:#2a323c; --text:#d7dde4; --dim:#8b96a3;
  --queued:#6b7785; --running:#2f81f7; --cached:#8957e5; --done:#2ea043; --failed:#da3633; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--text); }
header { display:flex; align-items:center; gap:12px; padding:12px 20px; border-bottom:1px solid var(--line); }
header h1 { font-size:18px; margin:0; }
#live { font-size:12px; color:var(--dim); }
#live[data-connected=true]::before { content:'● '; color:var(--done); }
#live[data-connected=false]::before { content:'● '; color:var(--failed); }
main { display:grid; grid-template-columns: 320px 1fr; gap:16px; padding:16px 20px; }
section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px; }
h2 { font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--dim); margin:0 0 10px; }
.empty { color:var(--dim); }
.node { padding:8px 0; border-bottom:1px solid var(--line); }
.node-head { display:flex; gap:8px; align-items:center; }
.node .status { margin-left:auto; color:var(--dim); font-size:12px; }
.node .dot { width:9px; height:9px; border-radius:50%; background:var(--queued); }
.node[data-status=active] .dot { background:var(--done); }
.node[data-status=inactive] .dot { background:var(--failed); }
.bar { height:6px; background:var(--line); border-radius:3px; margin:6px 0 4px; overflow:hidden; }
.bar div { height:100%; background:var(--running); }
.node-foot { font-size:12px; color:var(--dim); }
button.build { display:block; width:100%; text-align:left; background:none; color:inherit; border:1px solid var(--line); border-radius:6px; padding:8px; margin-bottom:6px; cursor:pointer; font:inherit; }
button.build.selected { border-color:var(--running); }
.build-id { display:block; font-family:ui-monospace, monospace; font-size:12px; word-break:break-all; }
.build-state { display:block; color:var(--dim); font-size:12px; }
.counts i { font-style:normal; font-size:12px; margin-right:8px; }
.s-queued { color:var(--dim); } .s-running { color:var(--running); } .s-done { color:var(--done); } .s-cached { color:var(--cached); } .s-failed { color:var(--failed); }
#dag-wrap { overflow:auto; max-height:75vh; }
#dag .edges path { fill:none; stroke:#4a5563; stroke-width:1.2; }
#dag .action rect { fill:var(--queued); stroke:#0008; transition: fill .25s; }
#dag .action text { fill:#fff; font:12px ui-monospace, monospace; pointer-events:none; }
#dag .action .where { fill:#fffc; font-size:10px; }
#dag .action[data-state=running] rect { fill:var(--running); }
#dag .action[data-state=cached] rect { fill:var(--cached); }
#dag .action[data-state=done] rect { fill:var(--done); }
#dag .action[data-state=failed] rect { fill:var(--failed); }
.legend span { font-size:12px; margin-right:12px; }
.legend span::before { content:''; display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:4px; vertical-align:-1px; background:var(--c); }
#dag-summary { color:var(--dim); font-size:12px; margin-bottom:8px; }
`;

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Orion cluster</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>Orion cluster</h1><span id="live" data-connected="false">live updates</span>
<span style="margin-left:auto;font-size:12px;color:var(--dim)"><a style="color:inherit" href="/metrics">metrics</a> · <a style="color:inherit" href="/api/builds">API</a></span></header>
<main>
<div>
<section><h2>Nodes</h2><div id="nodes"><p class="empty">Loading…</p></div></section>
<section style="margin-top:16px"><h2>Builds</h2><div id="builds"><p class="empty">Loading…</p></div></section>
</div>
<section><h2>Build graph</h2>
<div class="legend"><span style="--c:var(--queued)">queued</span><span style="--c:var(--running)">running</span><span style="--c:var(--cached)">cache hit</span><span style="--c:var(--done)">done</span><span style="--c:var(--failed)">failed</span></div>
<div id="dag-summary">No build selected.</div>
<div id="dag-wrap"><svg id="dag" xmlns="http://www.w3.org/2000/svg" width="0" height="0"></svg></div>
</section>
</main>
<script>(${dashboardApp.toString()})();</script>
</body>
</html>
`;
