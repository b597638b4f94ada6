// Aligned text tables for people: a header row and columns padded to their widest cell, two
// spaces apart, numbers right-aligned so that digits line up. The last column is not padded
// (no trailing blanks).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace bertha::cli {

class Table {
  public:
    explicit Table(std::vector<std::string> header, std::string indent = "")
        : indent_(std::move(indent)), right_(header.size(), false) {
        rows_.push_back(std::move(header));
    }
    Table& right(size_t column) {
        if (column < right_.size()) right_[column] = true;
        return *this;
    }
    Table& add(std::vector<std::string> row) {
        row.resize(right_.size());
        rows_.push_back(std::move(row));
        return *this;
    }
    bool empty() const { return rows_.size() == 1; }

    std::string str() const {
        std::vector<size_t> width(right_.size(), 0);
        for (auto& r : rows_)
            for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
        std::string out;
        for (auto& r : rows_) {
            std::string line = indent_;
            for (size_t c = 0; c < r.size(); ++c) {
                const bool last = c + 1 == r.size();
                std::string pad(width[c] - r[c].size(), ' ');
                if (right_[c])
                    line += pad + r[c];
                else
                    line += last ? r[c] : r[c] + pad;
                if (!last) line += "  ";
            }
            while (!line.empty() && line.back() == ' ') line.pop_back();
            out += line + "\n";
        }
        return out;
    }

  private:
    std::string indent_;
    std::vector<bool> right_;
    std::vector<std::vector<std::string>> rows_;
};

} // namespace bertha::cli
