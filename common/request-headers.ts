/**
 * gRPC metadata Orion clients send with Execute and GetActionResult so the head
 * can group work by build and draw each build's graph.
 */

/** The client's build id (one per `orion build` run). */
export const BUILD_ID_HEADER = 'x-orion-build-id';
/** The action's id in the client's build graph. */
export const ACTION_ID_HEADER = 'x-orion-action-id';
/** Ids of the actions it depends on, comma-separated. */
export const ACTION_DEPS_HEADER = 'x-orion-action-deps';
/** A short human label ("CC src/foo.o"). */
export const ACTION_LABEL_HEADER = 'x-orion-action-label';
/** REAPI's RequestMetadata (Bazel sends it): its tool_invocation_id groups a build too. */
export const REQUEST_METADATA_HEADER = 'build.bazel.remote.execution.v2.requestmetadata-bin';
