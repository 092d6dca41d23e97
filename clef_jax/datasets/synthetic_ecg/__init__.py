"""`synthetic_ecg`: the embedded demo archive (simulated 12-lead ECGs + metadata)."""
