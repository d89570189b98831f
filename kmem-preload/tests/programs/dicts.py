import json, pickle
d = {f"key{i}": [i, str(i) * (i % 7), {"x": i}] for i in range(300000)}
l = [list(range(i % 50)) for i in range(100000)]
s = json.dumps(d)
p = pickle.dumps((d, l))
d2 = json.loads(s)
print(len(s), len(p), d2 == d, sum(map(len, l)))
