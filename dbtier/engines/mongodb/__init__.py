"""The MongoDB replica set engine's parts: rendered configs and URIs (``config``), mongodump and
mongorestore argv and repository naming (``dump``), oplog slices and restore targets (``oplog``), and
the pymongo conversations with the members (``rs``, the only module that imports pymongo)."""
