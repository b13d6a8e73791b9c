/** Which build and action an RPC belongs to, from its metadata (Orion headers, or REAPI RequestMetadata). */
import type { Metadata } from '@grpc/grpc-js';
import { RequestMetadata } from '../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { ACTION_DEPS_HEADER, ACTION_ID_HEADER, ACTION_LABEL_HEADER, BUILD_ID_HEADER, REQUEST_METADATA_HEADER } from '../common/request-headers.js';

export interface RequestInfo {
  buildId: string;
  actionId?: string;
  label?: string;
  deps: string[];
}

const MAX_ID = 200;
const MAX_DEPS = 10_000;

function text(md: Metadata, key: string, max = MAX_ID): string | undefined {
  const v = md.get(key)[0];
  if (v === undefined) return undefined;
  const s = String(v).trim();
  return s === '' ? undefined : s.slice(0, max);
}

/** Undefined when the caller named no build. Values are trimmed and bounded; nothing here throws. */
export function requestInfo(md: Metadata): RequestInfo | undefined {
  const buildId = text(md, BUILD_ID_HEADER);
  if (buildId) {
    const deps = (text(md, ACTION_DEPS_HEADER, 1_000_000) ?? '')
      .split(',')
      .map((d) => d.trim())
      .filter(Boolean)
      .slice(0, MAX_DEPS);
    return { buildId, actionId: text(md, ACTION_ID_HEADER), label: text(md, ACTION_LABEL_HEADER, 500), deps };
  }
  const bin = md.get(REQUEST_METADATA_HEADER)[0];
  if (bin !== undefined && Buffer.isBuffer(bin)) {
    try {
      const rm = RequestMetadata.decode(bin);
      if (!rm.toolInvocationId) return undefined;
      const label = [rm.actionMnemonic, rm.targetId].filter(Boolean).join(' ') || undefined;
      return { buildId: rm.toolInvocationId.slice(0, MAX_ID), actionId: rm.actionId || undefined, label: label?.slice(0, 500), deps: [] };
    } catch {
      return undefined;
    }
  }
  return undefined;
}
