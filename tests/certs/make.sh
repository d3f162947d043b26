#!/usr/bin/env bash
# Makes the test certificates again (see README.md). Needs the openssl command; run from this folder.
set -euo pipefail
cd "$(dirname "$0")"
dates=(-startdate 20000101000000Z -enddate 21000101000000Z)
sign() { openssl ca -batch -notext -config ca.cnf "${dates[@]}" "$@"; }
touch index.txt && echo 01 > serial.txt

openssl req -new -newkey rsa:2048 -nodes -subj "/CN=ferroloop test CA" -keyout ca.key -out ca.csr
sign -selfsign -keyfile ca.key -extensions ca_ext -in ca.csr -out ca.pem

openssl req -new -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
sign -cert ca.pem -keyfile ca.key -extensions server_ext -in server.csr -out server.pem

openssl req -new -newkey rsa:2048 -nodes -subj "/CN=ferroloop other test CA" -keyout other.key -out other.csr
sign -selfsign -keyfile other.key -extensions ca_ext -in other.csr -out other_ca.pem

rm -f ./*.csr ca.key other.key index.txt* serial.txt* ./0*.pem
