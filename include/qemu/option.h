// Block options: one flat dictionary of dotted keys, checked against schemas.
//
// Every way a user can describe a node ends up as a QDict of strings keyed by
// dotted paths, exactly like QEMU's flattened options:
//   --image-opts driver=qcow2,file.driver=file,file.filename=x
//   json:{"driver":"qcow2","file":{"driver":"file","filename":"x"}}
//   -f qcow2 x            (driver=qcow2, file.filename=x, via the tools)
// all give {driver: qcow2, file.driver: file, file.filename: x}.  A driver
// takes the keys it knows (validated by its OptionSchema), hands the "file."
// subtree to its child, and whatever is left over is an error naming it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "qemu/error.h"

namespace qemu {

class QDict {
public:
    using Map = std::map<std::string, std::string>;

    bool has(const std::string& key) const { return map_.count(key) != 0; }
    const std::string* get(const std::string& key) const;
    void set(const std::string& key, std::string value)
    {
        map_[key] = std::move(value);
        literals_.erase(key);
    }
    // A value that came from JSON as a number or boolean: parsed like any
    // string, but printed back unquoted by to_json() (booleans are stored
    // as "on"/"off" and printed as true/false).
    void set_literal(const std::string& key, std::string value)
    {
        map_[key] = std::move(value);
        literals_.insert(key);
    }
    // A JSON null (stored as the literal "null"): "backing": null.
    bool is_null(const std::string& key) const
    {
        const std::string* v = get(key);
        return v && *v == "null" && literals_.count(key);
    }
    // Sets key only if absent (for defaults and inherited options).
    void set_default(const std::string& key, std::string value) { map_.emplace(key, std::move(value)); }
    // Copies one entry (keeping its JSON type) from other, if present.
    void copy_from(const QDict& other, const std::string& key);
    // Copies every entry of other whose key is absent here.
    void merge_defaults(const QDict& other);
    bool erase(const std::string& key)
    {
        literals_.erase(key);
        return map_.erase(key) != 0;
    }
    // Removes and returns the value, if present.
    std::optional<std::string> take(const std::string& key);

    // Moves every "prefix.rest" key out into a new dict as "rest".
    QDict take_subtree(const std::string& prefix);
    bool has_subtree(const std::string& prefix) const;
    // Copies every key of other into this dict under "prefix.".
    void merge_subtree(const std::string& prefix, const QDict& other);

    bool empty() const { return map_.empty(); }
    size_t size() const { return map_.size(); }
    Map::const_iterator begin() const { return map_.begin(); }
    Map::const_iterator end() const { return map_.end(); }

    // Nested JSON text as QEMU prints json: filenames: `{"k": v, ...}`
    // with keys in the iteration order of QEMU's QDict hash table, so the
    // names match QEMU's byte for byte.
    std::string to_json() const;

private:
    Map map_;
    std::set<std::string> literals_;
};

// Parses "key=val,key2=val2" (",," is a literal comma) into dict.  A leading
// element without '=' is the value of implied_key, if one is given ("help"
// alone is returned as key "help" with value "on").
bool keyval_parse(QDict& dict, std::string_view text, const char* implied_key, Error& err);

// Parses the text after "json:" and flattens nested objects into dotted keys.
// Scalars become their string forms (true -> "on", numbers in decimal, null
// the literal "null", see is_null()).
bool json_parse_flat(QDict& dict, std::string_view json_text, Error& err);

enum class OptionType { String, Bool, Number, Size };

struct OptionDesc {
    std::string name;
    OptionType type;
    std::string help;
    std::string default_value;  // shown by -o help, empty if none
};

// The options a driver accepts at open or create time.
class OptionSchema {
public:
    OptionSchema() = default;
    OptionSchema(std::initializer_list<OptionDesc> descs) : descs_(descs) {}
    void append(const OptionSchema& other);

    const OptionDesc* find(std::string_view name) const;
    const std::vector<OptionDesc>& descs() const { return descs_; }

    // Checks that every key of dict present in this schema has a well-formed
    // value for its type.
    bool validate(const QDict& dict, Error& err) const;

private:
    std::vector<OptionDesc> descs_;
};

// Typed accessors; each reports a QEMU-style error naming the parameter.
std::optional<bool> parse_bool_option(const std::string& name, const std::string& value, Error& err);
std::optional<uint64_t> parse_size_option(const std::string& name, const std::string& value, Error& err);
std::optional<uint64_t> parse_number_option(const std::string& name, const std::string& value, Error& err);

// Take a typed option out of dict, or return the default when absent.  On a
// malformed value, err is set and nullopt returned.
std::optional<bool> take_bool(QDict& dict, const std::string& key, bool def, Error& err);
std::optional<uint64_t> take_size(QDict& dict, const std::string& key, uint64_t def, Error& err);
std::optional<uint64_t> take_number(QDict& dict, const std::string& key, uint64_t def, Error& err);
std::string take_string(QDict& dict, const std::string& key, const std::string& def = "");

}  // namespace qemu
