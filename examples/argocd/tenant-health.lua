-- Argo CD health check for tenancy.dev/Tenant.
--
--   Healthy      Ready=True, phase Ready, status.observedGeneration is current
--   Suspended    phase Suspended (spec.suspended: true)
--   Degraded     phase Degraded or Invalid, or Ready=False with reason InvalidSpec
--   Progressing  anything else: no status yet, Provisioning, a spec change the
--                operator has not observed yet, Terminating (grace period)
--
-- The message is the Ready condition's. Install it with argocd-cm-patch.yaml.
local hs = {}

local function readyCondition(status)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      return condition
    end
  end
  return nil
end

local function messageOf(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to process the Tenant"
  return hs
end

local ready = readyCondition(status)
local phase = status.phase

if phase == "Terminating" then
  hs.status = "Progressing"
  hs.message = messageOf(ready, "Tenant is being deleted")
  return hs
end
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  -- Deleted, and the operator has not recorded it yet.
  hs.status = "Progressing"
  hs.message = "Tenant is being deleted"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. string.format("%d", generation)
  return hs
end

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = messageOf(ready, "Tenant is suspended")
  return hs
end

local invalidSpec = ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec"
if phase == "Degraded" or phase == "Invalid" or invalidSpec then
  hs.status = "Degraded"
  hs.message = messageOf(ready, "Tenant is " .. phase)
  return hs
end

if phase == "Ready" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = messageOf(ready, "Tenant is ready")
  return hs
end

hs.status = "Progressing"
hs.message = messageOf(ready, "Tenant is " .. phase)
return hs
