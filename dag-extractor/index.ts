/** Build-graph extraction: Make, CMake (through Ninja), Ninja and compile_commands.json to a BuildGraph. */
export type { ActionKind, BuildAction, BuildGraph } from './types.js';
export type { ExtractOptions, GraphExtractor } from './extractor.js';
export { extractGraph, detectBuildSystem, createAutoDetectingExtractor, type BuildSystem, type ExtractorsBySystem } from './extract-graph.js';
export { createMakeExtractor, type MakeExtractorDeps } from './make.js';
export { createCMakeExtractor, type CMakeExtractorDeps } from './cmake.js';
export { createNinjaExtractor } from './ninja.js';
export { createCompdbExtractor } from './compdb.js';
export { createProcessCommandRunner, type CommandRunner, type CommandResult, type RunOptions } from './command-runner.js';
export { classifyCommandLine, type ClassifyOptions, type LineClassification } from './command-line-classifier.js';
export { parseMakeDryRun, type DryRunCommand, type MakeRecipe } from './make-dry-run-parser.js';
export { parseNinjaManifest, type NinjaEdge, type NinjaManifest } from './ninja-manifest.js';
export { tokenizeShell, ShellSyntaxError, type ShellToken, type ShellWord, type ShellOperator } from './shell-tokenizer.js';
export { commandId, assignActionIds } from './action-id.js';
export { topologicalOrder } from './graph-order.js';
export { toJson, toDot } from './graph-format.js';
