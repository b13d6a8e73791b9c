import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeActionMessage, encodeCommandMessage } from '../../cas/proto-wire.js';
import type { Action, Command } from '../../cas/types.js';
import { actionToPb, commandToPb } from '../../proto/convert.js';
import { Action as PbAction, Command as PbCommand } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';

// Strings with empty ones, non-ASCII and NUL, as argv and paths may hold.
const str = fc.oneof(fc.constant(''), fc.string(), fc.string({ unit: 'grapheme' }), fc.constant('a\u0000b'));
const prop = fc.record({ name: str, value: str });
const platform = fc.option(fc.record({ properties: fc.array(prop, { maxLength: 4 }) }), { nil: undefined });
const digest = fc.record({ hash: fc.stringMatching(/^[0-9a-f]{64}$/), sizeBytes: fc.oneof(fc.constant(0), fc.nat(), fc.maxSafeNat()) });

const command: fc.Arbitrary<Command> = fc.record({
  arguments: fc.array(str, { maxLength: 6 }),
  environmentVariables: fc.array(prop, { maxLength: 4 }),
  outputPaths: fc.array(str, { maxLength: 3 }),
  outputFiles: fc.array(str, { maxLength: 3 }),
  outputDirectories: fc.array(str, { maxLength: 3 }),
  workingDirectory: str,
  platform,
});

const action: fc.Arbitrary<Action> = fc.record({
  commandDigest: digest,
  inputRootDigest: digest,
  timeoutMs: fc.option(fc.integer({ min: 1, max: 10_000_000 }), { nil: undefined }),
  doNotCache: fc.boolean(),
  salt: fc.option(fc.uint8Array({ maxLength: 8 }).map((u) => Buffer.from(u)), { nil: undefined }),
  platform,
});

describe('canonical Command and Action encoding (keys computed without the generated gRPC code)', () => {
  it('encodes every Command byte for byte as the generated code does, so action digests match', () => {
    fc.assert(
      fc.property(command, (c) => {
        expect(encodeCommandMessage(c)).toEqual(Buffer.from(PbCommand.encode(commandToPb(c)).finish()));
      }),
      { numRuns: 2000 },
    );
  });

  it('encodes every Action byte for byte as the generated code does', () => {
    fc.assert(
      fc.property(action, (a) => {
        expect(encodeActionMessage(a)).toEqual(Buffer.from(PbAction.encode(actionToPb(a)).finish()));
      }),
      { numRuns: 2000 },
    );
  });

  it('round-trips through the generated decoder', () => {
    const c: Command = { arguments: ['cc', '', '-c'], environmentVariables: [{ name: 'PATH', value: '/bin' }], outputPaths: ['a.o'], outputFiles: [], outputDirectories: [], workingDirectory: 'src', platform: { properties: [{ name: 'OSFamily', value: 'linux' }] } };
    const back = PbCommand.decode(encodeCommandMessage(c));
    expect(back.arguments).toEqual(['cc', '', '-c']);
    expect(back.workingDirectory).toBe('src');
    expect(back.platform?.properties).toEqual([{ name: 'OSFamily', value: 'linux' }]);
  });
});
