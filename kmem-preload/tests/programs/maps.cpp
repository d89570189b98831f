// std::map and std::string, the allocation pattern of much C++ code.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

int main() {
    std::map<std::string, std::vector<std::string>> index;
    for (int i = 0; i < 200000; i++) {
        std::string key = "key-" + std::to_string(i % 5000);
        index[key].push_back(std::string(i % 97, 'a' + i % 26) + std::to_string(i));
    }
    size_t total = 0;
    for (auto &kv : index) {
        for (auto &s : kv.second) total += s.size();
        kv.second.erase(kv.second.begin(), kv.second.begin() + kv.second.size() / 2);
    }
    std::string joined;
    for (auto it = index.begin(); it != index.end(); ++it) joined += it->first.substr(0, 5);
    std::printf("%zu keys, %zu bytes, first %s, joined %zu\n", index.size(), total,
                index.begin()->second.front().c_str(), joined.size());
    return 0;
}
