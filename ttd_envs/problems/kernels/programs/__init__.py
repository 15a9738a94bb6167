"""Programs shipped as text: the initial states of the kernel envs (read, never imported by the
package itself; the tests import them under Triton's interpreter)."""
