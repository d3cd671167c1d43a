// JSON text exactly as QEMU writes it (qobject_to_json(), and
// qobject_to_json_pretty() for "--output=json").
//
// QEMU keeps object members in a hash table of 512 buckets and prints them
// bucket by bucket, the most recently inserted member of a bucket first.
// The member order users see is therefore a function of the key names and
// the insertion order; to reproduce it, build objects in the order QEMU's
// QAPI visitors fill them (the order of the fields in the QAPI schema).
//
// Strings are escaped as QEMU does: '"', '\\' and the usual control
// characters by name, every other code point outside printable ASCII as
// \uXXXX (UTF-16 surrogate pairs beyond the BMP), invalid UTF-8 as U+FFFD.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qemu {

// Pretty: members on their own lines, indented by four spaces per level.
// Compact: "{"a": 1, "b": [1, 2]}".
std::string to_qemu_json(const nlohmann::ordered_json& value, bool pretty);

// The members of an object in the order QEMU prints them.
struct QdictMember {
    const std::string* key;
    const nlohmann::ordered_json* value;
};
std::vector<QdictMember> qdict_members(const nlohmann::ordered_json& object);

// A scalar as QEMU prints it outside JSON (qemu-img info's human output):
// strings unquoted, numbers and booleans as in JSON.
std::string scalar_to_string(const nlohmann::ordered_json& value);

}  // namespace qemu
