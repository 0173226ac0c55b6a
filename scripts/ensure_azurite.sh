#!/usr/bin/env bash
# Install Azurite (Microsoft's Azure Storage emulator, the npm package `azurite`, pinned) for
# tests/test_azure_sources.py when it is missing and npm is there. Idempotent: does nothing when
# the pinned version is already installed. Installs globally where npm's global prefix is writable
# (root), else under ~/.local (the test looks there too). Never fails: without npm the test skips,
# saying why; with npm but a failed install the test fails, saying so.
VERSION=3.37.0
have() {
  local exe
  for exe in "$(command -v azurite-blob 2>/dev/null)" "$HOME/.local/bin/azurite-blob"; do
    [ -n "$exe" ] && [ -x "$exe" ] && [ "$("$exe" --version 2>/dev/null)" = "$VERSION" ] && return 0
  done
  return 1
}
if have; then exit 0; fi
if ! command -v npm >/dev/null 2>&1; then
  echo "ensure_azurite: npm missing; the Azure (az://) source tests will skip" >&2
  exit 0
fi
prefix=$(npm prefix -g 2>/dev/null)
args=(install -g --no-fund --no-audit "azurite@$VERSION")
if [ -z "$prefix" ] || { [ ! -w "$prefix/lib" ] && [ ! -w "$prefix" ]; }; then
  args+=(--prefix "$HOME/.local")
fi
echo "ensure_azurite: installing azurite@$VERSION (npm ${args[*]})" >&2
npm "${args[@]}" >/tmp/blipsearch-azurite-install.log 2>&1 ||
  echo "ensure_azurite: install failed (see /tmp/blipsearch-azurite-install.log); the Azure tests will fail" >&2
exit 0
