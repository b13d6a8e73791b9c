import { describe, expect, it } from 'vitest';
import { createMetricsRegistry } from '../../common/metrics.js';

/** Checks every line against the Prometheus text format (0.0.4) and returns the samples by series. */
function parseExposition(text: string): Map<string, number> {
  expect(text.endsWith('\n')).toBe(true);
  const samples = new Map<string, number>();
  const typed = new Map<string, string>();
  for (const line of text.slice(0, -1).split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        expect(['counter', 'gauge', 'histogram', 'summary', 'untyped']).toContain(meta[3]);
        typed.set(meta[2]!, meta[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$/.exec(line);
    expect(m, `not a valid sample line: ${JSON.stringify(line)}`).not.toBeNull();
    const family = m![1]!.replace(/_(bucket|sum|count)$/, '');
    expect(typed.has(m![1]!) || typed.get(family) === 'histogram', `sample ${m![1]} has no TYPE line before it`).toBe(true);
    samples.set(`${m![1]}${m![2] ?? ''}`, Number(m![3] === '+Inf' ? Infinity : m![3]));
  }
  return samples;
}

describe('metrics registry: Prometheus text exposition', () => {
  it('writes HELP and TYPE lines, then one sample per label set, labels sorted by name', () => {
    const m = createMetricsRegistry();
    const c = m.counter('orion_things_total', 'Things done.');
    c.inc();
    c.inc({ z: '1', a: 'x' }, 2);
    c.inc({ a: 'x', z: '1' });
    const g = m.gauge('orion_queue_length', 'Queued.');
    g.set(7);
    expect(m.expose()).toBe(
      '# HELP orion_things_total Things done.\n# TYPE orion_things_total counter\norion_things_total 1\norion_things_total{a="x",z="1"} 3\n' +
        '# HELP orion_queue_length Queued.\n# TYPE orion_queue_length gauge\norion_queue_length 7\n',
    );
  });

  it('escapes backslashes, quotes and newlines in label values and help text', () => {
    const m = createMetricsRegistry();
    m.counter('orion_x_total', 'line one\nline \\two').inc({ path: 'a"b\\c\nd' });
    const text = m.expose();
    expect(text).toContain('# HELP orion_x_total line one\\nline \\\\two\n');
    expect(text).toContain('orion_x_total{path="a\\"b\\\\c\\nd"} 1\n');
    parseExposition(text);
  });

  it('writes cumulative histogram buckets with +Inf, _sum and _count', () => {
    const m = createMetricsRegistry();
    const h = m.histogram('orion_action_duration_seconds', 'Durations.', [0.1, 1, 10]);
    for (const v of [0.05, 0.1, 0.5, 3, 60]) h.observe(v, { result: 'ok' });
    const s = parseExposition(m.expose());
    expect(s.get('orion_action_duration_seconds_bucket{result="ok",le="0.1"}')).toBe(2);
    expect(s.get('orion_action_duration_seconds_bucket{result="ok",le="1"}')).toBe(3);
    expect(s.get('orion_action_duration_seconds_bucket{result="ok",le="10"}')).toBe(4);
    expect(s.get('orion_action_duration_seconds_bucket{result="ok",le="+Inf"}')).toBe(5);
    expect(s.get('orion_action_duration_seconds_count{result="ok"}')).toBe(5);
    expect(s.get('orion_action_duration_seconds_sum{result="ok"}')).toBeCloseTo(63.65);
    expect(h.get({ result: 'ok' })).toEqual({ count: 5, sum: expect.closeTo(63.65) });
  });

  it('reads collected gauges at exposition time, and an unused counter as 0', () => {
    const m = createMetricsRegistry();
    let queue = 1;
    m.gauge('orion_q', 'q', (g) => g.set(queue));
    m.counter('orion_hits_total', 'hits');
    expect(parseExposition(m.expose()).get('orion_q')).toBe(1);
    queue = 5;
    const s = parseExposition(m.expose());
    expect(s.get('orion_q')).toBe(5);
    expect(s.get('orion_hits_total')).toBe(0);
  });

  it('refuses invalid names, duplicate metrics and decreasing counters', () => {
    const m = createMetricsRegistry();
    expect(() => m.counter('orion-bad', 'x')).toThrow('invalid metric name "orion-bad"');
    m.counter('orion_ok_total', 'x');
    expect(() => m.gauge('orion_ok_total', 'x')).toThrow('metric orion_ok_total is registered twice');
    expect(() => m.counter('orion_c_total', 'x').inc(undefined, -1)).toThrow('counter orion_c_total cannot decrease');
    expect(() => m.counter('orion_d_total', 'x').inc({ 'bad-label': '1' })).toThrow('invalid metric label name "bad-label"');
  });
});
