"""What a failing Redis raises: the errors every Redis call here is ready for.

redis-py's cluster client raises RedisClusterException subclasses (no master
reachable, slots not covered) that are not RedisError; sockets raise OSError.
"""

from redis.exceptions import RedisClusterException, RedisError

REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
