#!/bin/sh
# Fails when a file has trailing whitespace; prints what it checked.
status=0
for file in "$@"; do
  if grep -n ' $' "$file" >/dev/null; then echo "trailing whitespace: $file" >&2; status=1; fi
  echo "lint ok: $file"
done
exit $status
