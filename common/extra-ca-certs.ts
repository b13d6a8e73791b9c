/**
 * The `orion` launcher (dist/orion.mjs run as a program: scripts/launcher-header.mjs)
 * keeps NODE_EXTRA_CA_CERTS away from Node's start-up, which would parse the file before
 * any of Orion runs (~50 ms for a system CA bundle), and passes it as
 * ORION_NODE_EXTRA_CA_CERTS. Put back here, first thing, so every process Orion starts
 * (compilers, build steps) sees the environment it was given; TLS connections read the
 * certificates themselves (systemRoots in common/credentials.ts).
 */
const deferred = process.env.ORION_NODE_EXTRA_CA_CERTS;
if (deferred !== undefined) {
  process.env.NODE_EXTRA_CA_CERTS = deferred;
  delete process.env.ORION_NODE_EXTRA_CA_CERTS;
}
