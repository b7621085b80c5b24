"""The HDF5 feature cache: schema, working shards, the final file, reading, and the extractor."""
