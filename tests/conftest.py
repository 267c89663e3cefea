import os

# Tests run on the host CPU; keep XLA from grabbing every thread of a shared 2-core machine.
# The suite is bound by XLA compilation of many small programs: LLVM's lowest optimization
# level compiles them 17-26% faster (measured on tests/test_models.py, test_ema.py and
# test_reference.py, one after the other), and the reference parity tests pass under it.
os.environ.setdefault('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=true '
                      '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
    """For modules whose runs compile the same programs again and again: a disk cache for
    the module's duration (``pytestmark = pytest.mark.usefixtures('compilation_cache')``)."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('jit_cache')))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    yield
    jax.config.update('jax_compilation_cache_dir', None)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', min_time)
    cc.reset_cache()


def pytest_terminal_summary(terminalreporter):
    """Say which tests did not run for want of the release's reference files, and how to run
    them (CI has ../shared/reference beside the clone; a user's clone does not)."""
    skipped = [r for r in terminalreporter.stats.get('skipped', [])
               if 'release reference case' in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f'{len(skipped)} test(s) skipped without the release reference files; to run them '
            'too, put the shared folder beside the clone (../shared/reference) and rerun '
            '`bash scripts/test.sh`.')
