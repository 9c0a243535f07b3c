#!/bin/sh
# npm run build: compiles the runtime into dist/ with the files it reads at run time, then stamps it.
# bin/stockwire runs dist/ only while the stamp is newer than every source file.
set -e
cd "$(dirname "$0")/.."
if [ ! -x ./node_modules/.bin/tsc ]; then
  # Installed without dev dependencies: no compiler, and bin/stockwire runs the sources through tsx.
  echo "stockwire: no TypeScript compiler installed; dist/ not built, the sources run through tsx" >&2
  exit 0
fi
rm -rf dist
./node_modules/.bin/tsc -p tsconfig.build.json
mkdir -p dist/processors/db
cp -r processors/db/migrations dist/processors/db/
touch dist/.built
