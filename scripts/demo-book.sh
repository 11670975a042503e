#!/usr/bin/env bash
# Book a slot against the running demo city (`cargo run -p jyt -- up`),
# end to end with curl, every step through the gateway: register a patient
# (real-name, GB 11643 ID number) and apply for an e-card online, list
# tomorrow's clinics at 北京协和医院,
# book a free CT slot (confirmed at once), pay for an expert clinic (held,
# then confirmed), and show the bookings in PostgreSQL.
#
# Every request is signed as the demo WeChat app; `sign` below is the
# README's canonical string, in shell. The patient is enrolled by that app,
# so it may act for them (POST /v1/patients, /v1/patients/{id}/ecard).
set -euo pipefail
GW=${GW:-http://127.0.0.1:8080}
APP=wechat
SECRET=demo-wechat-secret-change-me-0123456789abcdef

# sign METHOD PATH [BODY] [curl args...]: a signed request to the gateway.
sign() {
  local method=$1 path=$2 body=${3:-} ts nonce digest sig
  shift 3 || shift $#
  ts=$(date +%s)
  nonce=$(tr -d - </proc/sys/kernel/random/uuid)
  digest=$(printf %s "$body" | sha256sum | cut -d' ' -f1)
  sig=$(printf '%s\n%s\n%s\n%s\n%s' "$method" "$path" "$ts" "$nonce" "$digest" \
    | openssl dgst -sha256 -hmac "$SECRET" -hex | sed 's/^.* //')
  curl -sS -X "$method" "$GW$path" -H "X-App-Id: $APP" -H "X-Timestamp: $ts" \
    -H "X-Nonce: $nonce" -H "X-Signature: $sig" -H 'Content-Type: application/json' \
    ${body:+--data "$body"} "$@"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# A patient with a valid resident ID (GB 11643 check digit) and an e-card.
id_number=$(python3 -c '
import random
w=[7,9,10,5,8,4,2,1,6,3,7,9,10,5,8,4,2]; s="1101051990%02d%02d%03d" % (random.randint(1,12), random.randint(1,28), random.randint(0,999))
print(s+"10X98765432"[sum(int(a)*b for a,b in zip(s,w))%11])')
person=$(sign POST /v1/patients \
  "{\"name\": \"演示患者\", \"id_number\": \"$id_number\", \"phone\": \"139$(printf %08d $RANDOM$RANDOM | cut -c1-8)\"}" \
  | json 'd["person_id"]')
card=$(sign POST "/v1/patients/$person/ecard" "" -H "Idempotency-Key: card-$person" | json 'd["card_number"]')
echo "patient $person, card $card"

day=$(TZ=Asia/Shanghai date -d tomorrow +%F)
schedules=$(sign GET "/v1/hospitals/pumch/schedules?date=$day")
ct=$(echo "$schedules" | json '[s for s in d["schedules"] if s["clinic_level"] == "ct"][0]["slots"][0]["slot_id"]')
expert=$(echo "$schedules" | json '[s for s in d["schedules"] if s["clinic_level"] == "expert"][0]["slots"][1]["slot_id"]')

echo "--- book CT (free: confirmed at once)"
sign POST /v1/bookings "{\"slot_id\": \"$ct\", \"card_number\": \"$card\"}" -H "Idempotency-Key: $(tr -d - </proc/sys/kernel/random/uuid)"
echo
echo "--- book an expert clinic (held until paid), then pay it"
held=$(sign POST /v1/bookings "{\"slot_id\": \"$expert\", \"card_number\": \"$card\"}" -H "Idempotency-Key: $(tr -d - </proc/sys/kernel/random/uuid)")
echo "$held"
booking=$(echo "$held" | json 'd["booking_id"]')
fee=$(echo "$held" | json 'd["fee_fen"]')
sign POST "/v1/bookings/$booking/payments" "{\"payment_method\": \"self_pay\", \"payment_reference\": \"wx$(date +%s%N)\", \"amount_fen\": $fee}"
echo
echo "--- in PostgreSQL"
psql -h 127.0.0.1 -U postgres jyt_slot_pumch -c \
  "SELECT id, status, pool, seat_no, visit_no, fee_fen FROM bookings WHERE patient_id = '$person'"
