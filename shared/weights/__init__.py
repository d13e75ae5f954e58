"""Weight versions as a manifest of verified buckets, moved by a pluggable transport.

A version's bytes are one standard safetensors file; the manifest (manifest.py) cuts it into buckets
of a set size with a hash each, and a ``WeightTransport`` (transport.py, one module per backend under
transports/) moves the buckets. A receiver holds a version only once every bucket is verified.
Nothing is re-exported here: the contracts import only settings.py, without torch.
"""
