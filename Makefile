# Orion build entry points. `make setup` installs everything a fresh machine needs.
PROTOC ?= protoc
PROTO_SRC := $(shell find proto -name '*.proto' -not -path 'proto/gen/*' | sort)
TS_PROTO_OPTS := outputServices=grpc-js,esModuleInterop=true,importSuffix=.js,useOptionals=messages,forceLong=number,env=node

.PHONY: setup deps system-deps proto proto-check build test check sample bench clean

setup: system-deps deps proto build

system-deps:
	bash scripts/install-system-deps.sh
	bash scripts/install-browser.sh
	bash scripts/install-bazel.sh

# `npm ci` of this machine's npm (11.19) rejects lock files without every platform's optional
# packages; `npm install` installs the locked versions all the same.
deps:
	npm install --no-audit --no-fund --no-save

proto:
	rm -rf proto/gen && mkdir -p proto/gen
	$(PROTOC) --plugin=protoc-gen-ts_proto=node_modules/.bin/protoc-gen-ts_proto \
	  --ts_proto_out=proto/gen --ts_proto_opt=$(TS_PROTO_OPTS) \
	  -I proto -I /usr/include $(PROTO_SRC)

# Fails when the committed generated code is out of date with the .proto files.
proto-check: proto
	git diff --exit-code --stat -- proto/gen || (echo "proto/gen is out of date: run 'make proto' and commit" >&2; exit 1)
	test -z "$$(git status --porcelain -- proto/gen)" || (echo "proto/gen has untracked generated files: run 'make proto' and commit" >&2; exit 1)

# tsc type-checks and emits dist/; cc builds the spawn helper (sandbox/orion-spawn.c) into dist/; esbuild then bundles the CLI into dist/orion.mjs, which
# starts in half the time of loading a few hundred modules (a no-op build is mostly start-up).
# Each command's modules go to their own chunk (dist/chunks/), loaded only by that command:
# `orion build` does not parse the head, the node or the generated gRPC client code it does not use.
build:
	npx tsc -p tsconfig.json
	rm -rf dist/chunks
	npx esbuild dist/cli/main.js --bundle --splitting --platform=node --format=esm --target=node20 \
	  --outdir=dist --entry-names=orion --chunk-names=chunks/[name]-[hash] --out-extension:.js=.mjs \
	  --external:pino --external:pino-pretty --log-level=warning \
	  "--banner:js=import { createRequire as __orionRequire } from 'node:module'; const require = __orionRequire(import.meta.url);"
	node scripts/launcher-header.mjs dist/orion.mjs
	chmod +x dist/orion.mjs dist/cli/main.js
	$(CC) -O2 -Wall -Wextra -Werror -o dist/orion-spawn sandbox/orion-spawn.c

test: build
	npx vitest run

# The whole suite on a fresh machine: system packages, npm deps, generated code up to date, tests.
check: system-deps deps proto-check build
	npx vitest run

sample: build
	bash scripts/sample.sh

bench: build
	bash bench/run.sh

clean:
	rm -rf dist
