// AHC039 baseline: the best axis-parallel rectangle on a 1000 x 1000 grid.
// Each grid cell weighs (+1 per mackerel, -1 per sardine); the maximum-weight sub-rectangle of
// cells (Kadane over every pair of rows) becomes the net. The exact score of the closed rectangle
// is recounted and written to stderr as "score <s>" so tests can cross-check the judge.
#include <bits/stdc++.h>
using namespace std;

int main() {
    const int CELL = 1000, G = 100, LIMIT = 100000;
    int n;
    if (!(cin >> n)) return 1;
    vector<int> xs(2 * n), ys(2 * n);
    vector<vector<int>> weight(G, vector<int>(G, 0));
    for (int k = 0; k < 2 * n; k++) {
        cin >> xs[k] >> ys[k];
        int cx = min(xs[k] / CELL, G - 1), cy = min(ys[k] / CELL, G - 1);
        weight[cx][cy] += k < n ? 1 : -1;
    }
    long best = LONG_MIN;
    int bx0 = 0, bx1 = 0, by0 = 0, by1 = 0;
    for (int x0 = 0; x0 < G; x0++) {
        vector<long> column(G, 0);
        for (int x1 = x0; x1 < G; x1++) {
            for (int y = 0; y < G; y++) column[y] += weight[x1][y];
            long run = 0;
            int start = 0;
            for (int y = 0; y < G; y++) {
                if (run <= 0) { run = 0; start = y; }
                run += column[y];
                if (run > best) { best = run; bx0 = x0; bx1 = x1; by0 = start; by1 = y; }
            }
        }
    }
    int left = bx0 * CELL, right = min((bx1 + 1) * CELL, LIMIT);
    int bottom = by0 * CELL, top = min((by1 + 1) * CELL, LIMIT);
    int caught = 0;
    for (int k = 0; k < 2 * n; k++)
        if (left <= xs[k] && xs[k] <= right && bottom <= ys[k] && ys[k] <= top) caught += k < n ? 1 : -1;
    printf("4\n%d %d\n%d %d\n%d %d\n%d %d\n", left, bottom, right, bottom, right, top, left, top);
    fprintf(stderr, "score %d\n", max(0, caught + 1));
    return 0;
}
