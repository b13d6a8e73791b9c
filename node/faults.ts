/**
 * Faults a node can be told to inject (`orion node --fault-inject NAME`, hidden from
 * --help). They exist so tests can run the head against a misbehaving node made of
 * real processes; a node started with one is broken on purpose.
 */
export const NODE_FAULTS = ['corrupt-outputs'] as const;

export type NodeFault = (typeof NODE_FAULTS)[number];

export function isNodeFault(value: string): value is NodeFault {
  return (NODE_FAULTS as readonly string[]).includes(value);
}
