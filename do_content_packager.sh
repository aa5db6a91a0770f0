#!/bin/sh
# The platform SDK's packager interface over our open format (docs/sam-format.md):
#   ./do_content_packager.sh MODEL_DIR PLAINTEXT_KEY KEY_ID   -> ./KEY_ID/
# Packages made here are read by `python -m sam` and `agent run` (ENCRYPTION_METHOD=sam),
# not by the platform's own Sam decryption. PYTHON selects the interpreter (default python3).
set -eu
if [ "$#" -ne 3 ]; then
    echo "usage: $0 MODEL_DIR PLAINTEXT_KEY KEY_ID" >&2
    echo "  (safer: ${PYTHON:-python3} -m sam pack MODEL_DIR KEY_ID --key-file FILE)" >&2
    exit 2
fi
exec "${PYTHON:-python3}" -m sam pack -- "$1" "$2" "$3"  # "--": a key may start with "-"
