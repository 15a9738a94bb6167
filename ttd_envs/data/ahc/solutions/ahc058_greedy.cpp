// AHC058 baseline: strengthen level-0 machines greedily.
// Each turn, among the affordable level-0 upgrades whose extra production over the remaining
// turns repays their cost, take the one with the best (gain - cost) / cost; otherwise wait.
// The program replays its own plan and writes "score <s>" (round(1e5 * log2 S)) to stderr so
// tests can cross-check the judge.
#include <bits/stdc++.h>
using namespace std;

int main() {
    int n, levels, turns;
    long long apples;
    if (!(cin >> n >> levels >> turns >> apples)) return 1;
    vector<long long> a(n);
    for (auto& v : a) cin >> v;
    vector<vector<long long>> cost(levels, vector<long long>(n));
    for (auto& row : cost) for (auto& v : row) cin >> v;
    vector<vector<long long>> count(levels, vector<long long>(n, 1)), power(levels, vector<long long>(n, 0));
    string plan;
    for (int t = 0; t < turns; t++) {
        int best = -1;
        double best_ratio = 0.0;
        for (int j = 0; j < n; j++) {
            long long price = cost[0][j] * (power[0][j] + 1);
            double gain = double(a[j]) * double(count[0][j]) * double(turns - t);
            if (price <= apples && gain > price && (gain - price) / price > best_ratio) {
                best_ratio = (gain - price) / price;
                best = j;
            }
        }
        if (best >= 0) {
            apples -= cost[0][best] * (power[0][best] + 1);
            power[0][best]++;
            plan += "0 " + to_string(best) + "\n";
        } else {
            plan += "-1\n";
        }
        for (int j = 0; j < n; j++) apples += a[j] * count[0][j] * power[0][j];
        for (int i = 1; i < levels; i++)
            for (int j = 0; j < n; j++) count[i - 1][j] += count[i][j] * power[i][j];
    }
    fputs(plan.c_str(), stdout);
    fprintf(stderr, "score %lld\n", llround(100000.0 * log2((double)apples)));
    return 0;
}
