# Sourced by the emulator install scripts: find_python NAME MINOR prints a
# Python 3.MINOR or newer (PYTHON if set, else python3.1x on PATH, else the
# newest pyenv version), or exits naming NAME and what it needs.
find_python() {
    local name="$1" minor="$2"
    if [[ -n "${PYTHON:-}" ]]; then
        echo "$PYTHON"
        return
    fi
    # pyenv shims exist for versions that are not selected: run each
    # candidate to see that it works.
    local candidate
    for candidate in python3.14 python3.13 python3.12 python3.11 python3.10 python3; do
        if "$candidate" -c "import sys; sys.exit(sys.version_info < (3, $minor))" >/dev/null 2>&1; then
            command -v "$candidate"
            return
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        local found
        found="$(ls -d "$(pyenv root)"/versions/3.*/bin/python3 2>/dev/null | sort -V \
            | awk -F/ -v min="$minor" '{ split($(NF-2), v, "."); if (v[2] + 0 >= min) print }' \
            | tail -n 1 || true)"
        if [[ -n "$found" ]]; then
            echo "$found"
            return
        fi
    fi
    echo "scripts/emulators/$name needs Python >= 3.$minor; install it (for example" \
        "'pyenv install 3.$minor') or set PYTHON" >&2
    exit 1
}
