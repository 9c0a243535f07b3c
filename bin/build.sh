#!/bin/sh
# npm run build: compiles the runtime into dist/ with the files it reads at run time, then stamps it.
# bin/stockwire runs dist/ only while the stamp is newer than every source file.
set -e
cd "$(dirname "$0")/.."
rm -rf dist
./node_modules/.bin/tsc -p tsconfig.build.json
mkdir -p dist/processors/db
cp -r processors/db/migrations dist/processors/db/
touch dist/.built
