#!/usr/bin/env bash
# What CI runs, for a local check before pushing.
exec "$(dirname "$0")/../.ci/run"
