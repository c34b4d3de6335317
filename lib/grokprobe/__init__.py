"""grokprobe: flatness, neural collapse and grokking (Han et al., NeurIPS 2025), reproducibly."""

# The version salts every config hash: bump it whenever a change alters what a run computes,
# so stored runs made by older code are never silently reused.
__version__ = "0.1.0"
