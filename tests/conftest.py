import os

# Tests run on the host CPU; keep XLA from grabbing every thread of a shared 2-core machine.
os.environ.setdefault('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=true')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
