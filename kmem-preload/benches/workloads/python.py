# python: an interpreter's heap, as Python programs use it. Builds a dict
# of 200k entries (an int, a string and a small dict each) and a list of
# 100k lists, serialises them with json and pickle, parses the json back
# and compares, then sorts the keys and deletes half of them. Python's own
# small-object allocator serves blocks up to 512 bytes from 256 KiB arenas
# that it mallocs; strings, dict tables, list buffers and the serialised
# text go to malloc directly, with realloc growing them.
#
# Prints sizes and a CRC of the json text: the same under every allocator.
import json
import pickle
import zlib

d = {f"key{i}": [i, str(i) * (i % 7), {"x": i}] for i in range(200_000)}
lists = [list(range(i % 50)) for i in range(100_000)]
text = json.dumps(d)
blob = pickle.dumps((d, lists))
assert json.loads(text) == d
keys = sorted(d, key=lambda k: (len(d[k][1]), k))
for k in keys[::2]:
    del d[k]
print(len(text), len(blob), len(d), sum(map(len, lists)), zlib.crc32(text.encode()))
