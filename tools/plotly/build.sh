#!/bin/sh
# Rebuild static/vendor/plotly/plotly-airlock.min.js: plotly.js's core (which holds scatter) and
# the trace types the console draws (entry.js), minified by esbuild. About 1.2 MB against the
# cartesian bundle's 1.5 MB; what a cold chart page spends is mostly compiling and running it.
# Needs Node and npm (from the npm registry only); run it when the plotly package's plotly.js
# version changes (tests/usage/test_dashboard.py says when) or a new trace type is drawn.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
version="${1:-4.1.1}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/entry.js" "$work/"
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "plotly.js@$version" esbuild@0.25
npx esbuild entry.js --bundle --minify --format=iife --global-name=Plotly --target=es2018 \
    --define:process.env.NODE_ENV='"production"' --define:global=window \
    --log-level=warning --outfile=bundle.js
traces="$(grep -o 'moduleType:"trace",name:"[a-z0-9]*"' bundle.js | sed 's/.*name:"//; s/"//' | sort -u | paste -sd, -)"
out="$here/../../static/vendor/plotly/plotly-airlock.min.js"
{
    printf '/**\n* plotly.js (airlock: %s - minified) v%s\n' "$traces" "$version"
    printf '* Copyright 2012-2026, Plotly, Inc.\n* All rights reserved.\n* Licensed under the MIT license\n*/\n'
    cat bundle.js
} >"$out"
echo "wrote $out ($(wc -c <"$out") bytes; traces: $traces)"
