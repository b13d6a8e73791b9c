/** Domain types for content addressing. The core never imports generated protobuf code. */

/** A REAPI digest: lowercase hex SHA-256 of the content plus its size in bytes. */
export interface Digest {
  hash: string;
  sizeBytes: number;
}

export interface FileNode {
  name: string;
  digest: Digest;
  isExecutable: boolean;
}

export interface DirectoryNode {
  name: string;
  digest: Digest;
}

export interface SymlinkNode {
  name: string;
  target: string;
}

/** A REAPI Directory message: entries sorted by name, no duplicates. */
export interface Directory {
  files: FileNode[];
  directories: DirectoryNode[];
  symlinks: SymlinkNode[];
}

/** A REAPI Tree message: a directory and every directory below it (children in no particular order). */
export interface Tree {
  root: Directory;
  children: Directory[];
}

export interface OutputFile {
  path: string;
  digest: Digest;
  isExecutable: boolean;
}

export interface OutputSymlink {
  path: string;
  target: string;
}

export interface OutputDirectory {
  path: string;
  /** Digest of a REAPI Tree message. */
  treeDigest: Digest;
}

export interface ExecutionMetadata {
  worker: string;
  queuedMs?: number;
  workerStartMs?: number;
  workerCompletedMs?: number;
  inputFetchStartMs?: number;
  inputFetchCompletedMs?: number;
  executionStartMs?: number;
  executionCompletedMs?: number;
  outputUploadStartMs?: number;
  outputUploadCompletedMs?: number;
}

/** A REAPI ActionResult. */
export interface ActionResult {
  outputFiles: OutputFile[];
  outputSymlinks: OutputSymlink[];
  outputDirectories: OutputDirectory[];
  exitCode: number;
  stdoutRaw?: Buffer;
  stdoutDigest?: Digest;
  stderrRaw?: Buffer;
  stderrDigest?: Digest;
  executionMetadata?: ExecutionMetadata;
}

export interface EnvironmentVariable {
  name: string;
  value: string;
}

export interface Platform {
  properties: { name: string; value: string }[];
}

/** A REAPI Command. */
export interface Command {
  arguments: string[];
  environmentVariables: EnvironmentVariable[];
  /** REAPI v2.1 output_paths: files or directories, relative to the input root. */
  outputPaths: string[];
  /** Legacy fields, still sent by Bazel 4. */
  outputFiles: string[];
  outputDirectories: string[];
  workingDirectory: string;
  platform?: Platform;
}

/** A REAPI Action. */
export interface Action {
  commandDigest: Digest;
  inputRootDigest: Digest;
  timeoutMs?: number;
  doNotCache: boolean;
  salt?: Buffer;
  platform?: Platform;
}
