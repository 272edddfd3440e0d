MANIFEST = "shards.json"
ShardedIndex = build_sharded = is_sharded = open_sharded = None
