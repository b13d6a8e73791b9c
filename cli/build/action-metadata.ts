/** The gRPC metadata that tells the head which build and which graph action a request belongs to. */
import { Metadata } from '@grpc/grpc-js';
import { ACTION_DEPS_HEADER, ACTION_ID_HEADER, ACTION_LABEL_HEADER, BUILD_ID_HEADER } from '../../common/request-headers.js';
import type { BuildAction } from '../../dag-extractor/types.js';

/** Header values must be printable ASCII; the dependency list is bounded (gRPC caps metadata size). */
const MAX_DEPS_CHARS = 6000;

const ascii = (s: string) => s.replace(/[^\x20-\x7e]/g, '?');

export function actionMetadata(buildId: string, a: BuildAction): Metadata {
  const md = new Metadata();
  md.set(BUILD_ID_HEADER, ascii(buildId));
  md.set(ACTION_ID_HEADER, ascii(a.id));
  md.set(ACTION_LABEL_HEADER, ascii(a.label).slice(0, 500));
  let deps = '';
  for (const d of new Set(a.deps)) {
    if (deps.length + d.length + 1 > MAX_DEPS_CHARS) break;
    deps += (deps ? ',' : '') + ascii(d);
  }
  if (deps) md.set(ACTION_DEPS_HEADER, deps);
  return md;
}
