/** Platform properties Orion puts in the Commands it builds (and nodes act on). */

/** The absolute path the input root is mounted at while the action runs (the project's own path). */
export const MOUNT_PATH_PROPERTY = 'orion-mount-path';

/**
 * For compiles without dependency flags: the node adds `-MD -MF <value>` (relative
 * to the working directory) and returns the file as an extra output, so the
 * client learns every header the compiler read.
 */
export const DEPFILE_PROPERTY = 'orion-depfile';

/**
 * The program the client resolved argv[0] to, as `PATH@SHA256` of its binary (part of the key): a
 * node runs an action only where its own binary of that name is the same (node/tool-check.ts).
 */
export const TOOL_PROPERTY = 'orion-tool';

/**
 * Which argument is that program when it is not argv[0] (set only then): a compile run through
 * libtool (`sh ../libtool --mode=compile gcc ...`) names gcc, at this index.
 */
export const TOOL_ARG_PROPERTY = 'orion-tool-arg';

/** Metadata header carrying the global source context (hash/size) an Execute should run in. */
export const EXEC_ROOT_HEADER = 'x-orion-exec-root';
