#!/usr/bin/env bash
# Install Debian's chromium for the browser test when it is missing and we may (root + apt).
# Never fails: without it the browser test skips, saying why.
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: installing Debian's chromium for the browser test" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
    >/tmp/blipsearch-chromium-install.log 2>&1 || echo "ensure_chromium: install failed; the browser test will skip" >&2
else
  echo "ensure_chromium: chromium missing and cannot be installed here; the browser test will skip" >&2
fi
exit 0
