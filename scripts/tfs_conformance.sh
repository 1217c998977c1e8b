#!/usr/bin/env bash
# Run TF Serving's own model-server integration test against the bundled server.
#
#   scripts/tfs_conformance.sh PATH_TO_TENSORFLOW_SERVING_CHECKOUT [TEST_NAME ...]
#
# TF Serving's tensorflow_model_server_test.py starts whatever `tensorflow_model_server` sits under
# $TEST_SRCDIR/tf_serving/tensorflow_serving/model_servers/. This script lays that tree out in a
# temp dir from a local checkout of tensorflow/serving (the test, its test_util/ and
# servables/tensorflow/testdata/), puts a `tensorflow_model_server` there that runs
# `python -m pytest_tfserving.bundled_server "$@"`, runs the test with this Python, and prints
# `conformance: P passed, F failed, S skipped (of N)`. Nothing of TF Serving's is copied into this
# repository; the layout lives in a temp dir that is removed at exit (KEEP=1 keeps it).
#
# Env: PYTHON (default: python3), KEEP=1 to keep the temp dir, EXCLUDE="name ..." to skip tests.
set -euo pipefail

src="${1:?usage: $0 PATH_TO_TENSORFLOW_SERVING_CHECKOUT [TEST_NAME ...]}"
shift
PYTHON="${PYTHON:-python3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
test_py="$src/tensorflow_serving/model_servers/tensorflow_model_server_test.py"
[ -f "$test_py" ] || { echo "error: $test_py not found: pass the root of a tensorflow/serving checkout" >&2; exit 2; }

# The test's own needs: portpicker, six, and Keras 2 (its Keras tests build models with the Keras 2
# API; under Keras 3 `tf.saved_model.save` names the Sequential input "inputs", not "x").
"$PYTHON" -c "import portpicker, six, tf_keras" 2>/dev/null || "$PYTHON" -m pip install -q portpicker six tf_keras
export TF_USE_LEGACY_KERAS=1

work="$(mktemp -d "${TMPDIR:-/tmp}/tfs-conformance-XXXXXX")"
cleanup() { [ "${KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"; }
trap cleanup EXIT

tree="$work/srcdir/tf_serving/tensorflow_serving"
mkdir -p "$tree/model_servers/test_util" "$tree/servables/tensorflow"
cp "$test_py" "$tree/model_servers/"
cp "$src"/tensorflow_serving/model_servers/test_util/*.py "$tree/model_servers/test_util/"
cp -r "$src/tensorflow_serving/servables/tensorflow/testdata" "$tree/servables/tensorflow/"

# The server under test.
cat >"$tree/model_servers/tensorflow_model_server" <<EOF
#!/bin/sh
export PYTHONPATH="$repo\${PYTHONPATH:+:\$PYTHONPATH}"
exec "$(command -v "$PYTHON")" -m pytest_tfserving.bundled_server "\$@"
EOF
chmod +x "$tree/model_servers/tensorflow_model_server"

# tensorflow_serving.model_servers.test_util must import beside the pip package's apis/: an
# overlay package whose __path__ also holds the installed tensorflow_serving.
overlay="$work/overlay/tensorflow_serving"
mkdir -p "$overlay/model_servers"
installed="$("$PYTHON" -c 'import os, tensorflow_serving as t; print(os.path.dirname(t.__file__))')"
printf '__path__.append(%s)\n' "'$installed'" >"$overlay/__init__.py"
touch "$overlay/model_servers/__init__.py"
ln -s "$tree/model_servers/test_util" "$overlay/model_servers/test_util"
touch "$tree/model_servers/test_util/__init__.py"

filter=()
for name in "$@"; do filter+=("TensorflowModelServerTest.$name"); done
log="$work/test.log"
set +e
(cd "$work" && TEST_SRCDIR="$work/srcdir" TF_CPP_MIN_LOG_LEVEL=2 \
  PYTHONPATH="$work/overlay:$repo${PYTHONPATH:+:$PYTHONPATH}" \
  "$PYTHON" "$tree/model_servers/tensorflow_model_server_test.py" "${filter[@]}" 2>&1) | tee "$log"
set -e

"$PYTHON" - "$log" <<'EOF'
import re, sys
text = open(sys.argv[1], errors="replace").read()
ran = re.search(r"^Ran (\d+) tests?", text, re.M)
run = int(ran.group(1)) if ran else 0
counts = {k: 0 for k in ("failures", "errors", "skipped")}
tail = re.search(r"^(OK|FAILED)(?: \((.*)\))?$", text, re.M)
if tail and tail.group(2):
    for part in tail.group(2).split(","):
        key, _, value = part.strip().partition("=")
        counts[key] = int(value)
failed = counts["failures"] + counts["errors"]
bad = sorted(set(re.findall(r"^(?:FAIL|ERROR): (\w+)", text, re.M)))
print(f"\nconformance: {run - failed - counts['skipped']} passed, {failed} failed, "
      f"{counts['skipped']} skipped (of {run})")
if bad:
    print("not passing: " + ", ".join(bad))
sys.exit(0 if run and not failed else 1)
EOF
