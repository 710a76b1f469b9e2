#!/bin/bash
# The compose cluster's throwaway TLS material, made once by the one-shot `kafka-tls` service
# (apache/kafka image, its keytool) into the `kafka-tls` volume, which the brokers mount at
# /etc/kafka/secrets and the duewatch services read the CA from:
#
#   ca.pem               the CA certificate: the clients' KAFKA_SSL_CAFILE
#   kafka.keystore.p12   the brokers' key and certificate (SAN kafka-1..3, localhost, 127.0.0.1),
#                        signed by the CA; the image's KAFKA_SSL_KEYSTORE_FILENAME
#   kafka.password       the keystore's (and key's) password; KAFKA_SSL_KEYSTORE_CREDENTIALS and
#                        KAFKA_SSL_KEY_CREDENTIALS
#   ca.p12               the CA's key (only this script uses it)
#
# For a laptop. In production the certificates come from the bank's PKI (or cert-manager,
# Strimzi...), never from a script next to the brokers. Nothing secret is printed.
set -euo pipefail
cd /etc/kafka/secrets
if [[ -s kafka.keystore.p12 && -s ca.pem && -s kafka.password ]]; then
  echo "kafka-tls: certificates exist already"
  exit 0
fi
umask 077
rm -f ca.p12 ca.pem kafka.keystore.p12 kafka.csr kafka.crt kafka.password
password=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
days=825
keytool -genkeypair -keystore ca.p12 -storetype PKCS12 -storepass "$password" -alias ca \
  -dname "CN=duewatch compose CA" -keyalg EC -groupname secp256r1 -validity "$days" \
  -ext bc:c -ext KU=keyCertSign,cRLSign
keytool -exportcert -keystore ca.p12 -storepass "$password" -alias ca -rfc -file ca.pem
keytool -genkeypair -keystore kafka.keystore.p12 -storetype PKCS12 -storepass "$password" -alias kafka \
  -dname "CN=kafka" -keyalg EC -groupname secp256r1 -validity "$days"
keytool -certreq -keystore kafka.keystore.p12 -storepass "$password" -alias kafka -file kafka.csr
keytool -gencert -keystore ca.p12 -storepass "$password" -alias ca -infile kafka.csr -outfile kafka.crt \
  -rfc -validity "$days" -ext "SAN=dns:kafka-1,dns:kafka-2,dns:kafka-3,dns:localhost,ip:127.0.0.1" \
  -ext EKU=serverAuth,clientAuth -ext KU=digitalSignature,keyAgreement
keytool -importcert -keystore kafka.keystore.p12 -storepass "$password" -alias ca -file ca.pem -noprompt
keytool -importcert -keystore kafka.keystore.p12 -storepass "$password" -alias kafka -file kafka.crt -noprompt
printf '%s' "$password" > kafka.password
rm -f kafka.csr kafka.crt
chmod 644 ca.pem  # the duewatch containers (another user) read the CA
echo "kafka-tls: CA and broker certificate written"
