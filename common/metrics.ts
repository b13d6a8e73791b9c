/**
 * A tiny metrics registry: counters, gauges and histograms with labels, exposed in
 * the Prometheus text format (version 0.0.4). No dependency; one registry per daemon.
 */

export type Labels = Record<string, string>;

export interface Counter {
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
}

export interface Gauge {
  set(value: number, labels?: Labels): void;
  inc(labels?: Labels, by?: number): void;
  dec(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
}

export interface Histogram {
  observe(value: number, labels?: Labels): void;
  /** Count and sum of the observations with these labels. */
  get(labels?: Labels): { count: number; sum: number };
}

export interface MetricsRegistry {
  counter(name: string, help: string): Counter;
  /** `collect` (when given) is called at each exposition to set the gauge's values. */
  gauge(name: string, help: string, collect?: (g: Gauge) => void): Gauge;
  histogram(name: string, help: string, buckets?: number[]): Histogram;
  /** The Prometheus text exposition of every metric, in registration order. */
  expose(): string;
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Seconds: from 5 ms (a cache hit) to 10 min (a big link). */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A stable key for a label set (sorted by name), also its exposition form `{a="1",b="2"}`. */
function labelKey(labels: Labels | undefined): string {
  if (!labels) return '';
  const names = Object.keys(labels).sort();
  if (names.length === 0) return '';
  for (const n of names) if (!LABEL.test(n) || n.startsWith('__')) throw new Error(`invalid metric label name ${JSON.stringify(n)}`);
  return `{${names.map((n) => `${n}="${escapeLabelValue(String(labels[n]))}"`).join(',')}}`;
}

/** Adds `le` to a label key. */
function withLe(key: string, le: string): string {
  const le_ = `le="${le}"`;
  return key ? `${key.slice(0, -1)},${le_}}` : `{${le_}}`;
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

interface Metric {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  lines(): string[];
}

export function createMetricsRegistry(): MetricsRegistry {
  const metrics: Metric[] = [];
  const names = new Set<string>();

  function register(name: string, m: Metric) {
    if (!NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
    if (names.has(name)) throw new Error(`metric ${name} is registered twice`);
    names.add(name);
    metrics.push(m);
  }

  return {
    counter(name, help) {
      const values = new Map<string, number>();
      const c: Counter = {
        inc(labels, by = 1) {
          if (by < 0) throw new Error(`counter ${name} cannot decrease (inc by ${by})`);
          const k = labelKey(labels);
          values.set(k, (values.get(k) ?? 0) + by);
        },
        get: (labels) => values.get(labelKey(labels)) ?? 0,
      };
      // An unlabelled counter reads 0 before its first increment (so rate() sees it start).
      register(name, { name, help, type: 'counter', lines: () => (values.size === 0 ? [`${name} 0`] : [...values].map(([k, v]) => `${name}${k} ${formatValue(v)}`)) });
      return c;
    },
    gauge(name, help, collect) {
      const values = new Map<string, number>();
      const g: Gauge = {
        set(value, labels) {
          values.set(labelKey(labels), value);
        },
        inc(labels, by = 1) {
          const k = labelKey(labels);
          values.set(k, (values.get(k) ?? 0) + by);
        },
        dec(labels, by = 1) {
          const k = labelKey(labels);
          values.set(k, (values.get(k) ?? 0) - by);
        },
        get: (labels) => values.get(labelKey(labels)) ?? 0,
      };
      register(name, {
        name,
        help,
        type: 'gauge',
        lines() {
          collect?.(g);
          return [...values].map(([k, v]) => `${name}${k} ${formatValue(v)}`);
        },
      });
      return g;
    },
    histogram(name, help, buckets = DURATION_BUCKETS) {
      const bounds = [...buckets].sort((a, b) => a - b);
      if (bounds.length === 0 || new Set(bounds).size !== bounds.length) throw new Error(`histogram ${name} needs distinct buckets`);
      const series = new Map<string, { counts: number[]; count: number; sum: number }>();
      const h: Histogram = {
        observe(value, labels) {
          const k = labelKey(labels);
          let s = series.get(k);
          if (!s) series.set(k, (s = { counts: bounds.map(() => 0), count: 0, sum: 0 }));
          for (let i = 0; i < bounds.length; i++) if (value <= bounds[i]!) s.counts[i]!++;
          s.count++;
          s.sum += value;
        },
        get(labels) {
          const s = series.get(labelKey(labels));
          return { count: s?.count ?? 0, sum: s?.sum ?? 0 };
        },
      };
      register(name, {
        name,
        help,
        type: 'histogram',
        lines() {
          const out: string[] = [];
          for (const [k, s] of series) {
            bounds.forEach((b, i) => out.push(`${name}_bucket${withLe(k, formatValue(b))} ${s.counts[i]}`));
            out.push(`${name}_bucket${withLe(k, '+Inf')} ${s.count}`);
            out.push(`${name}_sum${k} ${formatValue(s.sum)}`);
            out.push(`${name}_count${k} ${s.count}`);
          }
          return out;
        },
      });
      return h;
    },
    expose() {
      const out: string[] = [];
      for (const m of metrics) {
        out.push(`# HELP ${m.name} ${escapeHelp(m.help)}`);
        out.push(`# TYPE ${m.name} ${m.type}`);
        out.push(...m.lines());
      }
      return out.join('\n') + '\n';
    },
  };
}
