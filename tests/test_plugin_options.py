"""The plugin without a model, and option resolution (command line > env > ini > default)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_without_model_plugin_adds_nothing_and_imports_no_tensorflow(pytester):
    pytester.makepyfile(
        """
        import sys

        def test_plain():
            assert "tensorflow" not in sys.modules
            assert not any(m.startswith("tensorflow_serving") for m in sys.modules)
        """
    )
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*tfs-gates*")
    result.stdout.no_fnmatch_line("*TF Serving release gate*")


def test_fixtures_skip_with_reason_without_model(pytester):
    pytester.makepyfile("def test_x(tfs_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no model under gate: pass --tfs-model=PATH*"])


def test_markers_are_registered_for_strict_markers(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.tfs_sla(p99_ms=20)
        @pytest.mark.tfs_no_string_ops
        def test_x():
            pass
        """
    )
    result = pytester.runpytest_subprocess("--strict-markers", "--collect-only", "-q")
    assert result.ret == 0


@pytest.mark.parametrize(
    ("args", "env", "ini", "expected"),
    [
        (["--tfs-max-batch-size=abc"], {}, "",
         "Invalid value 'abc' for --tfs-max-batch-size from command line --tfs-max-batch-size"),
        ([], {"TFS_BACKEND": "kubernetes"}, "",
         "Invalid value 'kubernetes' for --tfs-backend from env TFS_BACKEND: expected one of "
         "auto, docker, binary, bundled, remote"),
        ([], {}, "tfs_start_timeout = -3",
         "Invalid value '-3' for --tfs-start-timeout from ini tfs_start_timeout"),
        (["--tfs-batching-file=/nonexistent/batching.txt"], {}, "",
         "Invalid value '/nonexistent/batching.txt' for --tfs-batching-file from command line"),
        (["--tfs-max-batch-size=8", "--tfs-allowed-batch-sizes=4,16"], {}, "",
         "allowed_batch_sizes entry (16) must equal max_batch_size (8)"),
    ],
)
def test_bad_option_is_a_usage_error_naming_value_and_source(pytester, args, env, ini, expected,
                                                            monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{expected}*"])


def test_precedence_command_line_over_env_over_ini(pytester, monkeypatch):
    pytester.makeini("[pytest]\ntfs_max_batch_size = 4\ntfs_batch_timeout_micros = 50\n"
                     "tfs_num_batch_threads = 3\n")
    monkeypatch.setenv("TFS_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("TFS_BATCH_TIMEOUT_MICROS", "70")
    pytester.makepyfile(
        """
        from pytest_tfserving.session import get_session

        def test_x(request):
            batching = get_session(request.config).settings.batching
            assert batching.max_batch_size == 64        # command line
            assert batching.batch_timeout_micros == 70  # env over ini
            assert batching.num_batch_threads == 3      # ini
            assert batching.max_enqueued_batches == 100 # playbook default
        """
    )
    result = pytester.runpytest_subprocess("--tfs-max-batch-size=64")
    result.assert_outcomes(passed=1)


def test_batching_file_with_field_override(pytester):
    cfg = pytester.path / "batching.txt"
    cfg.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 500 }\n")
    pytester.makepyfile(
        """
        from pytest_tfserving.session import get_session

        def test_x(request):
            settings = get_session(request.config).settings
            assert settings.batching.max_batch_size == 8
            assert settings.batching.batch_timeout_micros == 200
            assert "batching.txt" in settings.batching_source
        """
    )
    result = pytester.runpytest_subprocess(f"--tfs-batching-file={cfg}",
                                           "--tfs-batch-timeout-micros=200")
    result.assert_outcomes(passed=1)


def test_help_and_readme_list_every_declared_option(pytester):
    from pytest_tfserving.option_table import markdown
    from pytest_tfserving.options import all_options
    from pytest_tfserving.settings import declared_classes

    declared = all_options(declared_classes())
    assert len(declared) > 60
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0
    text = result.stdout.str()
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("<!-- options:begin -->\n", 1)[1].split("\n<!-- options:end -->", 1)[0]
    assert block == markdown(), "regenerate: python -m pytest_tfserving.option_table"
    for option in declared:
        assert option.flag in text, option.flag
        assert f"`{option.flag}" in block, option.flag
    result.stdout.fnmatch_lines(["*--tfs-model=PATH*", "*[env TFS_MODEL, ini tfs_model]*"])
    markers = pytester.runpytest_subprocess("--markers")
    markers.stdout.fnmatch_lines(["*tfs_sla(*min_qps=*p99_ms=*): gate sla:*"])
