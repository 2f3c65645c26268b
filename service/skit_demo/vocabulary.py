"""What the demo calls are made of: clients and their flows, the conversation templates
(state machines), what the bot says, what callers say per intent and language, the date and
time phrases that become entities, and the mistakes ASR makes.

Other demo consumers (alias YAML for SLU retraining, the compliance rule judge's tests) can
read `INTENT_ALIASES` and `COMPLIANCE_BREACH_PHRASES` from here.
"""

from __future__ import annotations

from dataclasses import dataclass

LANGUAGES = {"en": "English", "hi": "Hindi", "ta": "Tamil", "te": "Telugu"}

INTENT_ALIASES: dict[str, tuple[str, ...]] = {
    "_confirm_": ("yes", "affirm"),
    "_cancel_": ("no", "deny"),
    "promise_to_pay": ("ptp", "will_pay"),
    "request_callback": ("callback", "call_later"),
    "talk_to_agent": ("agent_transfer", "human"),
    "what_is_this_about": ("purpose_of_call",),
    "_oos_": ("out_of_scope",),
}
"""Canonical intent -> older names for it. Flows with `legacy_labels` predict the first
alias, as a model trained before the rename would."""


@dataclass(frozen=True)
class Client:
    id: int
    name: dict[str, str]
    """The client's name as the bot says it, per language."""


@dataclass(frozen=True)
class Flow:
    id: int
    client_id: int
    template_id: int
    language: str
    name: str
    version: str
    asr_provider: str
    weight: float
    """Share of all demo calls."""
    legacy_labels: bool = False


CLIENTS = (
    Client(
        101,
        {"en": "Kaveri Finance", "hi": "कावेरी फाइनेंस", "ta": "காவேரி ஃபைனான்ஸ்", "te": "కావేరి ఫైనాన్స్"},
    ),
    Client(102, {"en": "Sahyadri Bank", "hi": "सह्याद्रि बैंक", "te": "సహ్యాద్రి బ్యాంక్"}),
    Client(103, {"en": "Nirmal Insurance", "hi": "निर्मल इंश्योरेंस"}),
    Client(104, {"en": "Metro Telecom", "hi": "मेट्रो टेलीकॉम", "ta": "மெட்ரோ டெலிகாம்"}),
)

DEBT_COLLECTION, INSURANCE_RENEWAL, CUSTOMER_SUPPORT = 1, 2, 3

FLOWS = (
    Flow(2001, 101, DEBT_COLLECTION, "en", "Kaveri Collections (English)", "2.3.0", "google", 0.14),
    Flow(2002, 101, DEBT_COLLECTION, "hi", "Kaveri Collections (Hindi)", "2.3.0", "google", 0.15),
    Flow(2003, 101, DEBT_COLLECTION, "ta", "Kaveri Collections (Tamil)", "2.1.4", "azure", 0.07),
    Flow(
        2004,
        102,
        DEBT_COLLECTION,
        "en",
        "Sahyadri EMI Recovery (English)",
        "1.9.2",
        "google",
        0.09,
        legacy_labels=True,
    ),
    Flow(
        2005,
        102,
        DEBT_COLLECTION,
        "hi",
        "Sahyadri EMI Recovery (Hindi)",
        "1.9.2",
        "google",
        0.12,
        legacy_labels=True,
    ),
    Flow(
        2006,
        102,
        DEBT_COLLECTION,
        "te",
        "Sahyadri EMI Recovery (Telugu)",
        "1.9.2",
        "azure",
        0.07,
        legacy_labels=True,
    ),
    Flow(2007, 103, INSURANCE_RENEWAL, "en", "Nirmal Renewals (English)", "3.0.1", "google", 0.09),
    Flow(2008, 103, INSURANCE_RENEWAL, "hi", "Nirmal Renewals (Hindi)", "3.0.1", "google", 0.08),
    Flow(2009, 104, CUSTOMER_SUPPORT, "en", "Metro Care (English)", "4.2.0", "google", 0.08),
    Flow(2010, 104, CUSTOMER_SUPPORT, "hi", "Metro Care (Hindi)", "4.2.0", "google", 0.07),
    Flow(2011, 104, CUSTOMER_SUPPORT, "ta", "Metro Care (Tamil)", "4.1.0", "azure", 0.04),
)

TEMPLATE_NAMES = {
    DEBT_COLLECTION: "debt_collection",
    INSURANCE_RENEWAL: "insurance_renewal",
    CUSTOMER_SUPPORT: "customer_support",
}
CALL_TYPES = {
    DEBT_COLLECTION: "OUTBOUND",
    INSURANCE_RENEWAL: "OUTBOUND",
    CUSTOMER_SUPPORT: "INBOUND",
}


@dataclass(frozen=True)
class State:
    """One bot state: what the bot asks, and where each understood intent leads.
    An intent the state does not expect keeps the call in the state (the bot re-asks)."""

    name: str
    transitions: dict[str, str]
    """Caller intent -> next state."""
    caller: dict[str, float]
    """What callers answer here: intent -> weight."""
    disposition: str = ""
    """Set on terminal states (no transitions): the call's outcome."""

    @property
    def terminal(self) -> bool:
        return not self.transitions


def _terminal(name: str, disposition: str) -> State:
    return State(name, {}, {}, disposition)


_COMMON_END = (
    _terminal("END_CALLBACK", "CALLBACK"),
    _terminal("END_WRONG_NUMBER", "WRONG_NUMBER"),
    _terminal("AGENT_TRANSFER", "AGENT_TRANSFER"),
    State(
        "ASK_CALLBACK_TIME",
        {"inform_time": "END_CALLBACK", "inform_date": "END_CALLBACK", "_oos_": "END_CALLBACK"},
        {"inform_time": 0.65, "inform_date": 0.2, "_oos_": 0.15},
    ),
)

TEMPLATES: dict[int, dict[str, State]] = {
    DEBT_COLLECTION: {
        s.name: s
        for s in (
            State(
                "INIT",
                {
                    "_confirm_": "PURPOSE",
                    "what_is_this_about": "PURPOSE",
                    "wrong_number": "END_WRONG_NUMBER",
                    "_cancel_": "END_WRONG_NUMBER",
                    "request_callback": "ASK_CALLBACK_TIME",
                },
                {
                    "_confirm_": 0.68,
                    "what_is_this_about": 0.09,
                    "wrong_number": 0.08,
                    "_cancel_": 0.05,
                    "request_callback": 0.06,
                    "_oos_": 0.04,
                },
            ),
            State(
                "PURPOSE",
                {
                    "promise_to_pay": "CONFIRM_DATE",
                    "inform_date": "CONFIRM_DATE",
                    "already_paid": "END_ALREADY_PAID",
                    "dispute": "AGENT_TRANSFER",
                    "talk_to_agent": "AGENT_TRANSFER",
                    "request_callback": "ASK_CALLBACK_TIME",
                    "_cancel_": "NEGOTIATE",
                },
                {
                    "promise_to_pay": 0.36,
                    "inform_date": 0.08,
                    "already_paid": 0.15,
                    "dispute": 0.07,
                    "talk_to_agent": 0.06,
                    "request_callback": 0.1,
                    "_cancel_": 0.12,
                    "_oos_": 0.06,
                },
            ),
            State(
                "NEGOTIATE",
                {
                    "promise_to_pay": "CONFIRM_DATE",
                    "_confirm_": "CONFIRM_DATE",
                    "_cancel_": "END_REFUSED",
                    "talk_to_agent": "AGENT_TRANSFER",
                },
                {"promise_to_pay": 0.35, "_confirm_": 0.1, "_cancel_": 0.4, "talk_to_agent": 0.15},
            ),
            State(
                "CONFIRM_DATE",
                {"_confirm_": "END_PTP", "_cancel_": "PURPOSE", "inform_date": "CONFIRM_DATE"},
                {"_confirm_": 0.82, "_cancel_": 0.1, "inform_date": 0.08},
            ),
            _terminal("END_PTP", "PTP"),
            _terminal("END_ALREADY_PAID", "ALREADY_PAID"),
            _terminal("END_REFUSED", "REFUSED_TO_PAY"),
            *_COMMON_END,
        )
    },
    INSURANCE_RENEWAL: {
        s.name: s
        for s in (
            State(
                "INIT",
                {
                    "_confirm_": "POLICY_REMINDER",
                    "what_is_this_about": "POLICY_REMINDER",
                    "wrong_number": "END_WRONG_NUMBER",
                    "request_callback": "ASK_CALLBACK_TIME",
                },
                {
                    "_confirm_": 0.75,
                    "what_is_this_about": 0.08,
                    "wrong_number": 0.06,
                    "request_callback": 0.07,
                    "_oos_": 0.04,
                },
            ),
            State(
                "POLICY_REMINDER",
                {
                    "_confirm_": "PAYMENT_LINK",
                    "_cancel_": "ASK_REASON",
                    "already_renewed": "END_NOT_INTERESTED",
                    "request_callback": "ASK_CALLBACK_TIME",
                    "talk_to_agent": "AGENT_TRANSFER",
                },
                {
                    "_confirm_": 0.45,
                    "_cancel_": 0.22,
                    "already_renewed": 0.1,
                    "request_callback": 0.12,
                    "talk_to_agent": 0.06,
                    "_oos_": 0.05,
                },
            ),
            State(
                "PAYMENT_LINK",
                {"_confirm_": "END_RENEWAL", "_cancel_": "AGENT_TRANSFER"},
                {"_confirm_": 0.88, "_cancel_": 0.12},
            ),
            State(
                "ASK_REASON",
                {
                    "too_expensive": "END_NOT_INTERESTED",
                    "already_renewed": "END_NOT_INTERESTED",
                    "_oos_": "END_NOT_INTERESTED",
                    "talk_to_agent": "AGENT_TRANSFER",
                },
                {
                    "too_expensive": 0.55,
                    "already_renewed": 0.2,
                    "_oos_": 0.15,
                    "talk_to_agent": 0.1,
                },
            ),
            _terminal("END_RENEWAL", "RENEWAL_CONFIRMED"),
            _terminal("END_NOT_INTERESTED", "NOT_INTERESTED"),
            *_COMMON_END,
        )
    },
    CUSTOMER_SUPPORT: {
        s.name: s
        for s in (
            State(
                "INIT",
                {
                    "check_balance": "AUTH",
                    "report_issue": "TROUBLESHOOT",
                    "billing_query": "BILLING",
                    "talk_to_agent": "AGENT_TRANSFER",
                },
                {
                    "check_balance": 0.32,
                    "report_issue": 0.3,
                    "billing_query": 0.2,
                    "talk_to_agent": 0.12,
                    "_oos_": 0.06,
                },
            ),
            State(
                "AUTH",
                {"inform_number": "BALANCE", "talk_to_agent": "AGENT_TRANSFER"},
                {"inform_number": 0.85, "talk_to_agent": 0.05, "_oos_": 0.1},
            ),
            State(
                "BALANCE",
                {
                    "_cancel_": "END_RESOLVED",
                    "_confirm_": "END_RESOLVED",
                    "report_issue": "TROUBLESHOOT",
                    "talk_to_agent": "AGENT_TRANSFER",
                },
                {"_cancel_": 0.6, "_confirm_": 0.1, "report_issue": 0.2, "talk_to_agent": 0.1},
            ),
            State(
                "TROUBLESHOOT",
                {
                    "_confirm_": "END_RESOLVED",
                    "_cancel_": "AGENT_TRANSFER",
                    "talk_to_agent": "AGENT_TRANSFER",
                },
                {"_confirm_": 0.5, "_cancel_": 0.35, "talk_to_agent": 0.15},
            ),
            State(
                "BILLING",
                {
                    "_confirm_": "END_RESOLVED",
                    "_cancel_": "END_RESOLVED",
                    "dispute": "AGENT_TRANSFER",
                    "talk_to_agent": "AGENT_TRANSFER",
                },
                {"_confirm_": 0.45, "_cancel_": 0.25, "dispute": 0.15, "talk_to_agent": 0.15},
            ),
            _terminal("END_RESOLVED", "RESOLVED"),
            *_COMMON_END,
        )
    },
}
"""Template id -> its states by name; every call starts in INIT."""

_BOT_COMMON = {
    "en": {
        "ASK_CALLBACK_TIME": "Sure. What time should we call you back?",
        "END_CALLBACK": "Okay, we will call you back then. Thank you.",
        "END_WRONG_NUMBER": "Sorry for the trouble. We will update our records. Goodbye.",
        "AGENT_TRANSFER": "Please hold while I connect you to one of our agents.",
        "NO_INPUT": "Sorry, I could not hear you.",
    },
    "hi": {
        "ASK_CALLBACK_TIME": "ज़रूर। हम आपको किस समय कॉल करें?",
        "END_CALLBACK": "ठीक है, हम आपको तब कॉल करेंगे। धन्यवाद।",
        "END_WRONG_NUMBER": "असुविधा के लिए क्षमा करें। हम अपना रिकॉर्ड अपडेट कर देंगे। नमस्ते।",
        "AGENT_TRANSFER": "कृपया लाइन पर बने रहें, मैं आपको हमारे एजेंट से जोड़ रही हूँ।",
        "NO_INPUT": "माफ़ कीजिए, मुझे आपकी आवाज़ नहीं आई।",
    },
    "ta": {
        "ASK_CALLBACK_TIME": "சரி. எந்த நேரத்தில் உங்களை மீண்டும் அழைக்கலாம்?",
        "END_CALLBACK": "சரி, அப்போது மீண்டும் அழைக்கிறோம். நன்றி.",
        "END_WRONG_NUMBER": "சிரமத்திற்கு மன்னிக்கவும். எங்கள் பதிவுகளை புதுப்பிக்கிறோம். வணக்கம்.",
        "AGENT_TRANSFER": "காத்திருங்கள், உங்களை எங்கள் முகவருடன் இணைக்கிறேன்.",
        "NO_INPUT": "மன்னிக்கவும், உங்கள் குரல் கேட்கவில்லை.",
    },
    "te": {
        "ASK_CALLBACK_TIME": "సరే. మేము మీకు ఏ సమయంలో మళ్ళీ కాల్ చేయాలి?",
        "END_CALLBACK": "సరే, అప్పుడు మళ్ళీ కాల్ చేస్తాము. ధన్యవాదాలు.",
        "END_WRONG_NUMBER": "ఇబ్బందికి క్షమించండి. మా రికార్డులు సరిచేస్తాము. నమస్కారం.",
        "AGENT_TRANSFER": "దయచేసి వేచి ఉండండి, మిమ్మల్ని మా ఏజెంట్‌తో కలుపుతున్నాను.",
        "NO_INPUT": "క్షమించండి, మీ మాట వినిపించలేదు.",
    },
}

_BOT_TEMPLATES: dict[int, dict[str, dict[str, str]]] = {
    DEBT_COLLECTION: {
        "en": {
            "INIT": "Hello, this is an automated call from {client}. Am I speaking with the "
            "account holder?",
            "PURPOSE": "Your loan EMI of rupees {amount} for the account ending {digits} is "
            "overdue. When will you be able to pay?",
            "NEGOTIATE": "Late payment adds penalty charges and affects your credit score. Can "
            "you pay at least part of the amount by {date}?",
            "CONFIRM_DATE": "Just to confirm, you will pay on {date}. Is that correct?",
            "END_PTP": "Thank you. We have noted your payment date of {date}. Have a nice day.",
            "END_ALREADY_PAID": "Thank you for the information. Our team will verify your "
            "payment within two working days. Goodbye.",
            "END_REFUSED": "We have noted your response. Please pay soon to avoid further "
            "charges. Goodbye.",
        },
        "hi": {
            "INIT": "नमस्ते, यह {client} की ओर से एक ऑटोमेटेड कॉल है। क्या मेरी बात खाताधारक से हो रही है?",
            "PURPOSE": "आपके खाता संख्या {digits} पर लोन की {amount} रुपये की EMI बकाया है। आप भुगतान "
            "कब तक कर पाएंगे?",
            "NEGOTIATE": "देर से भुगतान करने पर पेनल्टी लगती है और क्रेडिट स्कोर पर असर पड़ता है। क्या आप "
            "{date} तक कुछ राशि जमा कर सकते हैं?",
            "CONFIRM_DATE": "पुष्टि कर दूँ, आप {date} को भुगतान करेंगे। क्या यह सही है?",
            "END_PTP": "धन्यवाद। हमने आपकी भुगतान तिथि {date} नोट कर ली है। आपका दिन शुभ हो।",
            "END_ALREADY_PAID": "जानकारी के लिए धन्यवाद। हमारी टीम दो कार्य दिवसों में आपका भुगतान जाँच "
            "लेगी। नमस्ते।",
            "END_REFUSED": "हमने आपका जवाब नोट कर लिया है। कृपया अतिरिक्त शुल्क से बचने के लिए जल्द भुगतान "
            "करें। नमस्ते।",
        },
        "ta": {
            "INIT": "வணக்கம், இது {client} நிறுவனத்திலிருந்து ஒரு தானியங்கி அழைப்பு. நான் கணக்கு "
            "உரிமையாளரிடம் பேசுகிறேனா?",
            "PURPOSE": "{digits} என முடியும் உங்கள் கணக்கில் {amount} ரூபாய் EMI நிலுவையில் உள்ளது. "
            "எப்போது செலுத்த முடியும்?",
            "NEGOTIATE": "தாமதமாக செலுத்தினால் அபராதம் விதிக்கப்படும். {date} க்குள் ஒரு பகுதியையாவது "
            "செலுத்த முடியுமா?",
            "CONFIRM_DATE": "உறுதிப்படுத்துகிறேன், நீங்கள் {date} அன்று செலுத்துவீர்கள். சரியா?",
            "END_PTP": "நன்றி. நீங்கள் செலுத்தும் தேதி {date} என பதிவு செய்துள்ளோம். இனிய நாள்.",
            "END_ALREADY_PAID": "தகவலுக்கு நன்றி. இரண்டு வேலை நாட்களில் உங்கள் கட்டணத்தை சரிபார்ப்போம். வணக்கம்.",
            "END_REFUSED": "உங்கள் பதிலை பதிவு செய்துள்ளோம். கூடுதல் கட்டணம் தவிர்க்க விரைவில் "
            "செலுத்துங்கள். வணக்கம்.",
        },
        "te": {
            "INIT": "నమస్కారం, ఇది {client} నుండి ఆటోమేటెడ్ కాల్. నేను ఖాతాదారుతో మాట్లాడుతున్నానా?",
            "PURPOSE": "{digits} తో ముగిసే మీ ఖాతాలో {amount} రూపాయల EMI బకాయి ఉంది. మీరు ఎప్పుడు చెల్లించగలరు?",
            "NEGOTIATE": "ఆలస్యంగా చెల్లిస్తే జరిమానా పడుతుంది. {date} లోపు కొంత మొత్తమైనా చెల్లించగలరా?",
            "CONFIRM_DATE": "నిర్ధారించుకుంటున్నాను, మీరు {date} న చెల్లిస్తారు. సరేనా?",
            "END_PTP": "ధన్యవాదాలు. మీ చెల్లింపు తేదీ {date} గా నమోదు చేశాము. శుభదినం.",
            "END_ALREADY_PAID": "సమాచారానికి ధన్యవాదాలు. రెండు పని దినాల్లో మీ చెల్లింపును ధృవీకరిస్తాము. నమస్కారం.",
            "END_REFUSED": "మీ సమాధానం నమోదు చేశాము. అదనపు ఛార్జీలు నివారించడానికి త్వరగా చెల్లించండి. నమస్కారం.",
        },
    },
    INSURANCE_RENEWAL: {
        "en": {
            "INIT": "Hello, I am calling from {client}. Am I speaking with the policy holder?",
            "POLICY_REMINDER": "Your health insurance policy number {digits} expires on {date}. "
            "The renewal premium is rupees {amount}. Would you like to renew now?",
            "PAYMENT_LINK": "Great. I will send a secure payment link to this number by SMS. "
            "Shall I go ahead?",
            "ASK_REASON": "May I know why you do not want to renew?",
            "END_RENEWAL": "The payment link has been sent. Thank you for staying with {client}.",
            "END_NOT_INTERESTED": "Thank you for your time. You can renew anytime before {date} "
            "on our website.",
        },
        "hi": {
            "INIT": "नमस्ते, मैं {client} से बोल रही हूँ। क्या मेरी बात पॉलिसी धारक से हो रही है?",
            "POLICY_REMINDER": "आपकी हेल्थ इंश्योरेंस पॉलिसी नंबर {digits} {date} को समाप्त हो रही है। "
            "रिन्यूअल प्रीमियम {amount} रुपये है। क्या आप अभी रिन्यू करना चाहेंगे?",
            "PAYMENT_LINK": "बढ़िया। मैं इस नंबर पर SMS से एक सुरक्षित पेमेंट लिंक भेज रही हूँ। क्या मैं भेज दूँ?",
            "ASK_REASON": "क्या मैं जान सकती हूँ कि आप रिन्यू क्यों नहीं करना चाहते?",
            "END_RENEWAL": "पेमेंट लिंक भेज दिया गया है। {client} के साथ बने रहने के लिए धन्यवाद।",
            "END_NOT_INTERESTED": "आपके समय के लिए धन्यवाद। आप {date} से पहले कभी भी हमारी वेबसाइट पर "
            "रिन्यू कर सकते हैं।",
        },
    },
    CUSTOMER_SUPPORT: {
        "en": {
            "INIT": "Welcome to {client} customer care. How can I help you today?",
            "AUTH": "Sure. Please tell me the last four digits of your account number.",
            "BALANCE": "Your current balance is rupees {amount}, valid till {date}. Is there "
            "anything else I can help with?",
            "TROUBLESHOOT": "Sorry for the trouble. Please restart your phone and check again. Is "
            "it working now?",
            "BILLING": "Your last bill of rupees {amount} includes international roaming "
            "charges. Would you like a detailed bill by SMS?",
            "END_RESOLVED": "Thank you for calling {client}. Have a great day.",
        },
        "hi": {
            "INIT": "{client} कस्टमर केयर में आपका स्वागत है। मैं आपकी क्या मदद कर सकती हूँ?",
            "AUTH": "ज़रूर। कृपया अपने अकाउंट नंबर के आखिरी चार अंक बताइए।",
            "BALANCE": "आपका मौजूदा बैलेंस {amount} रुपये है, जो {date} तक मान्य है। क्या और कुछ?",
            "TROUBLESHOOT": "असुविधा के लिए खेद है। कृपया अपना फ़ोन रीस्टार्ट करके दोबारा देखिए। क्या अब "
            "चल रहा है?",
            "BILLING": "आपके पिछले {amount} रुपये के बिल में इंटरनेशनल रोमिंग चार्ज शामिल हैं। क्या आप "
            "SMS पर पूरा बिल चाहेंगे?",
            "END_RESOLVED": "{client} को कॉल करने के लिए धन्यवाद। आपका दिन शुभ हो।",
        },
        "ta": {
            "INIT": "{client} வாடிக்கையாளர் சேவைக்கு வரவேற்கிறோம். நான் உங்களுக்கு எப்படி உதவலாம்?",
            "AUTH": "சரி. உங்கள் கணக்கு எண்ணின் கடைசி நான்கு இலக்கங்களை சொல்லுங்கள்.",
            "BALANCE": "உங்கள் தற்போதைய இருப்பு {amount} ரூபாய், {date} வரை செல்லுபடியாகும். வேறு "
            "ஏதாவது உதவி வேண்டுமா?",
            "TROUBLESHOOT": "சிரமத்திற்கு மன்னிக்கவும். உங்கள் போனை ரீஸ்டார்ட் செய்து மீண்டும் பாருங்கள். "
            "இப்போது வேலை செய்கிறதா?",
            "BILLING": "உங்கள் கடைசி {amount} ரூபாய் பில்லில் சர்வதேச ரோமிங் கட்டணங்கள் உள்ளன. முழு "
            "பில்லை SMS இல் அனுப்பட்டுமா?",
            "END_RESOLVED": "{client} ஐ அழைத்ததற்கு நன்றி. இனிய நாள்.",
        },
    },
}


def bot_prompt(template_id: int, language: str, state: str) -> str:
    """The bot's words in `state`, with {client}, {amount}, {digits} and {date} slots."""
    return _BOT_TEMPLATES[template_id][language].get(state) or _BOT_COMMON[language][state]


COMPLIANCE_BREACH_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "If you do not pay today we will send our recovery agents to your home.",
        "Legal action will be taken against you and your family members.",
        "We will inform your employer and relatives about your unpaid loan.",
    ),
    "hi": (
        "अगर आज भुगतान नहीं किया तो हम रिकवरी एजेंट आपके घर भेज देंगे।",
        "आपके और आपके परिवार के खिलाफ कानूनी कार्रवाई होगी।",
        "हम आपके ऑफिस और रिश्तेदारों को आपके लोन के बारे में बता देंगे।",
    ),
    "ta": (
        "இன்று செலுத்தவில்லை என்றால் உங்கள் வீட்டுக்கு ஆட்களை அனுப்புவோம்.",
        "உங்கள் மீதும் உங்கள் குடும்பத்தின் மீதும் சட்ட நடவடிக்கை எடுக்கப்படும்.",
    ),
    "te": (
        "ఈరోజు చెల్లించకపోతే మీ ఇంటికి రికవరీ ఏజెంట్లను పంపుతాము.",
        "మీపై మరియు మీ కుటుంబంపై చట్టపరమైన చర్యలు తీసుకుంటాము.",
    ),
}
"""Threats a debt-collection bot must never make (the RBI fair-practices code): a small
share of demo collection calls has one appended to a bot turn."""

COLLECTION_HOURS_IST = (8, 19)
"""Collection calls are allowed from 08:00 to 19:00 local time; demo calls outside are
timing breaches."""

CALLER_SAYS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "_confirm_": (
            "yes",
            "yes speaking",
            "yeah",
            "yes tell me",
            "ok",
            "correct",
            "yes that is right",
            "sure",
        ),
        "_cancel_": ("no", "no not now", "nope", "no i can't", "no that is not right"),
        "wrong_number": (
            "wrong number",
            "you have the wrong number",
            "there is no one by that name here",
            "i don't know this person",
        ),
        "what_is_this_about": (
            "what is this about",
            "who is calling",
            "why are you calling me",
            "which company is this",
        ),
        "request_callback": (
            "call me later",
            "i am busy right now call me back",
            "can you call me {time}",
            "call me back {time}",
        ),
        "promise_to_pay": (
            "i will pay {date}",
            "i will make the payment {date}",
            "i'll pay by {date}",
            "i can pay {date}",
            "will pay {date} after salary",
        ),
        "already_paid": (
            "i have already paid",
            "i paid yesterday",
            "payment is done already",
            "i paid through upi",
            "already paid the emi",
        ),
        "dispute": (
            "i never took this loan",
            "this amount is wrong",
            "i have not taken any loan",
            "i already closed this loan",
        ),
        "talk_to_agent": (
            "i want to talk to a person",
            "connect me to an agent",
            "give me customer care",
            "let me speak to a human",
        ),
        "inform_date": ("{date}", "on {date}", "maybe {date}", "by {date}"),
        "inform_time": ("{time}", "around {time}", "call {time}"),
        "inform_number": ("{number}", "it is {number}", "my number ends with {number}"),
        "_oos_": (
            "what is the weather today",
            "hello hello",
            "i can't hear you properly",
            "who gave you my number",
            "send me a message",
        ),
        "too_expensive": (
            "the premium is too high",
            "it is too expensive",
            "i can't afford it this year",
        ),
        "already_renewed": (
            "i already renewed it",
            "i renewed online last week",
            "renewal is done",
        ),
        "check_balance": ("what is my balance", "check my balance", "how much balance is left"),
        "report_issue": (
            "my internet is not working",
            "no network since morning",
            "my sim is not working",
            "calls are getting dropped",
        ),
        "billing_query": (
            "why is my bill so high",
            "i was charged extra this month",
            "explain my bill",
        ),
    },
    "hi": {
        "_confirm_": ("हाँ", "हाँ जी", "जी हाँ बोलिए", "हाँ बोल रहा हूँ", "ठीक है", "हाँ सही है"),
        "_cancel_": ("नहीं", "नहीं जी", "अभी नहीं", "नहीं हो पाएगा", "नहीं ये सही नहीं है"),
        "wrong_number": (
            "रॉन्ग नंबर है",
            "गलत नंबर लगाया है",
            "इस नाम का कोई नहीं है",
            "मैं इनको नहीं जानता",
        ),
        "what_is_this_about": (
            "किस बारे में है",
            "कौन बोल रहा है",
            "आप क्यों कॉल कर रहे हो",
            "कौन सी कंपनी से हो",
        ),
        "request_callback": (
            "बाद में कॉल करो",
            "अभी बिज़ी हूँ बाद में फ़ोन करना",
            "{time} कॉल करना",
            "{time} फ़ोन कीजिए",
        ),
        "promise_to_pay": (
            "{date} पेमेंट कर दूंगा",
            "{date} तक भर दूंगा",
            "{date} को पैसे जमा कर दूंगा",
            "सैलरी आने पर {date} दे दूंगा",
        ),
        "already_paid": (
            "मैंने पेमेंट कर दिया है",
            "कल ही भर दिया",
            "पैसे पहले ही जमा कर दिए",
            "यूपीआई से कर दिया है",
        ),
        "dispute": ("मैंने कोई लोन नहीं लिया", "ये अमाउंट गलत है", "मेरा लोन तो बंद हो गया है"),
        "talk_to_agent": ("किसी इंसान से बात कराओ", "एजेंट से बात करनी है", "कस्टमर केयर से जोड़ो"),
        "inform_date": ("{date}", "{date} को", "शायद {date}", "{date} तक"),
        "inform_time": ("{time}", "{time} के आसपास", "{time} कॉल करना"),
        "inform_number": ("{number}", "नंबर है {number}", "आखिरी चार अंक {number} हैं"),
        "_oos_": ("हेलो हेलो", "आवाज़ नहीं आ रही", "मेरा नंबर किसने दिया", "मैसेज भेज दो"),
        "too_expensive": ("प्रीमियम बहुत ज़्यादा है", "बहुत महंगा है", "इस साल नहीं हो पाएगा"),
        "already_renewed": ("मैंने पहले ही रिन्यू कर दिया", "ऑनलाइन रिन्यू कर दिया है"),
        "check_balance": ("मेरा बैलेंस बताओ", "बैलेंस कितना बचा है"),
        "report_issue": ("मेरा इंटरनेट नहीं चल रहा", "सुबह से नेटवर्क नहीं है", "कॉल कट रहे हैं"),
        "billing_query": ("बिल इतना ज़्यादा क्यों आया", "इस महीने एक्स्ट्रा चार्ज लगा है"),
    },
    "ta": {
        "_confirm_": ("ஆமா", "ஆமாங்க", "சரி", "சொல்லுங்க", "ஆமா பேசுறேன்"),
        "_cancel_": ("இல்லை", "இல்லைங்க", "வேண்டாம்", "இப்போ முடியாது"),
        "wrong_number": ("ராங் நம்பர்", "தப்பான நம்பர்", "அந்த பேர்ல யாரும் இல்லை"),
        "what_is_this_about": ("எதைப் பத்தி", "யாரு பேசுறது", "எதுக்கு கால் பண்றீங்க"),
        "request_callback": ("அப்புறம் கால் பண்ணுங்க", "இப்போ பிஸியா இருக்கேன்", "{time} கால் பண்ணுங்க"),
        "promise_to_pay": ("{date} கட்டிடுறேன்", "{date} பணம் கட்டுறேன்", "சம்பளம் வந்ததும் {date} கட்டுறேன்"),
        "already_paid": ("நான் ஏற்கனவே கட்டிட்டேன்", "நேத்தே கட்டிட்டேன்", "யுபிஐ ல கட்டிட்டேன்"),
        "dispute": ("நான் லோன் எடுக்கல", "இந்த அமௌன்ட் தப்பு"),
        "talk_to_agent": ("ஏஜென்ட் கிட்ட பேசணும்", "கஸ்டமர் கேர் கிட்ட கனெக்ட் பண்ணுங்க"),
        "inform_date": ("{date}", "ஒருவேளை {date}"),
        "inform_time": ("{time}", "{time} கூப்பிடுங்க"),
        "inform_number": ("{number}", "நம்பர் {number}"),
        "_oos_": ("ஹலோ ஹலோ", "சரியா கேக்கல", "என் நம்பர் யாரு கொடுத்தா"),
        "check_balance": ("என் பேலன்ஸ் என்ன", "பேலன்ஸ் எவ்வளவு இருக்கு"),
        "report_issue": ("இன்டர்நெட் வேலை செய்யல", "காலையிலிருந்து நெட்வொர்க் இல்லை"),
        "billing_query": ("பில் ஏன் இவ்வளவு அதிகமா வந்திருக்கு", "எக்ஸ்ட்ரா சார்ஜ் போட்டிருக்கீங்க"),
    },
    "te": {
        "_confirm_": ("అవును", "అవునండి", "సరే", "చెప్పండి", "అవును మాట్లాడుతున్నాను"),
        "_cancel_": ("లేదు", "లేదండి", "వద్దు", "ఇప్పుడు కుదరదు"),
        "wrong_number": ("రాంగ్ నంబర్", "తప్పు నంబర్", "ఆ పేరుతో ఎవరూ లేరు"),
        "what_is_this_about": ("దేని గురించి", "ఎవరు మాట్లాడుతున్నారు", "ఎందుకు కాల్ చేశారు"),
        "request_callback": ("తర్వాత కాల్ చేయండి", "ఇప్పుడు బిజీగా ఉన్నాను", "{time} కాల్ చేయండి"),
        "promise_to_pay": ("{date} కడతాను", "{date} డబ్బులు కడతాను", "జీతం రాగానే {date} కడతాను"),
        "already_paid": ("నేను ఇప్పటికే కట్టేశాను", "నిన్ననే కట్టాను", "యూపీఐ లో కట్టేశాను"),
        "dispute": ("నేను లోన్ తీసుకోలేదు", "ఈ అమౌంట్ తప్పు"),
        "talk_to_agent": ("ఏజెంట్ తో మాట్లాడాలి", "కస్టమర్ కేర్ కి కనెక్ట్ చేయండి"),
        "inform_date": ("{date}", "బహుశా {date}"),
        "inform_time": ("{time}", "{time} ఫోన్ చేయండి"),
        "_oos_": ("హలో హలో", "సరిగ్గా వినిపించడం లేదు", "నా నంబర్ ఎవరు ఇచ్చారు"),
    },
}
"""Language -> intent -> what callers say; {date}, {time} and {number} become entities."""

DATE_PHRASES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "en": (
        ("today", "days", 0),
        ("tomorrow", "days", 1),
        ("day after tomorrow", "days", 2),
        ("next week", "days", 7),
        ("monday", "weekday", 0),
        ("friday", "weekday", 4),
        ("saturday", "weekday", 5),
        ("the fifth", "day_of_month", 5),
        ("the tenth", "day_of_month", 10),
        ("fifteenth", "day_of_month", 15),
        ("twentieth", "day_of_month", 20),
        ("first of next month", "next_month_day", 1),
    ),
    "hi": (
        ("आज", "days", 0),
        ("कल", "days", 1),
        ("परसों", "days", 2),
        ("अगले हफ्ते", "days", 7),
        ("सोमवार", "weekday", 0),
        ("शुक्रवार", "weekday", 4),
        ("पांच तारीख", "day_of_month", 5),
        ("पंद्रह तारीख", "day_of_month", 15),
        ("बीस तारीख", "day_of_month", 20),
        ("अगले महीने की एक तारीख", "next_month_day", 1),
    ),
    "ta": (
        ("இன்னைக்கு", "days", 0),
        ("நாளைக்கு", "days", 1),
        ("நாளை மறுநாள்", "days", 2),
        ("அடுத்த வாரம்", "days", 7),
        ("திங்கட்கிழமை", "weekday", 0),
        ("வெள்ளிக்கிழமை", "weekday", 4),
        ("ஐந்தாம் தேதி", "day_of_month", 5),
        ("பதினைந்தாம் தேதி", "day_of_month", 15),
        ("இருபதாம் தேதி", "day_of_month", 20),
    ),
    "te": (
        ("ఈరోజు", "days", 0),
        ("రేపు", "days", 1),
        ("ఎల్లుండి", "days", 2),
        ("వచ్చే వారం", "days", 7),
        ("సోమవారం", "weekday", 0),
        ("శుక్రవారం", "weekday", 4),
        ("ఐదో తారీఖు", "day_of_month", 5),
        ("పదిహేనో తారీఖు", "day_of_month", 15),
        ("ఇరవయ్యో తారీఖు", "day_of_month", 20),
    ),
}
"""(what the caller says, how it resolves, argument): "days" from today, the next
"weekday" (0 = Monday), the next "day_of_month", or a day of next month."""

TIME_PHRASES: dict[str, tuple[tuple[str, int], ...]] = {
    "en": (
        ("five pm", 17),
        ("in the evening", 18),
        ("ten am", 10),
        ("after six", 18),
        ("in the morning", 9),
        ("three o'clock", 15),
        ("after lunch", 14),
    ),
    "hi": (
        ("शाम पांच बजे", 17),
        ("सुबह दस बजे", 10),
        ("छह बजे के बाद", 18),
        ("दोपहर तीन बजे", 15),
        ("शाम को", 18),
    ),
    "ta": (
        ("சாயங்காலம் ஐந்து மணிக்கு", 17),
        ("காலை பத்து மணிக்கு", 10),
        ("ஆறு மணிக்கு மேல", 18),
        ("மதியம் மூணு மணிக்கு", 15),
    ),
    "te": (
        ("సాయంత్రం ఐదు గంటలకు", 17),
        ("ఉదయం పది గంటలకు", 10),
        ("ఆరు గంటల తర్వాత", 18),
        ("మధ్యాహ్నం మూడు గంటలకు", 15),
    ),
}
"""(what the caller says, the hour it means in local time)."""

MONTHS: dict[str, tuple[str, ...]] = {
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    "hi": (
        "जनवरी",
        "फ़रवरी",
        "मार्च",
        "अप्रैल",
        "मई",
        "जून",
        "जुलाई",
        "अगस्त",
        "सितंबर",
        "अक्टूबर",
        "नवंबर",
        "दिसंबर",
    ),
    "ta": (
        "ஜனவரி",
        "பிப்ரவரி",
        "மார்ச்",
        "ஏப்ரல்",
        "மே",
        "ஜூன்",
        "ஜூலை",
        "ஆகஸ்ட்",
        "செப்டம்பர்",
        "அக்டோபர்",
        "நவம்பர்",
        "டிசம்பர்",
    ),
    "te": (
        "జనవరి",
        "ఫిబ్రవరి",
        "మార్చి",
        "ఏప్రిల్",
        "మే",
        "జూన్",
        "జూలై",
        "ఆగస్టు",
        "సెప్టెంబర్",
        "అక్టోబర్",
        "నవంబర్",
        "డిసెంబర్",
    ),
}

ASR_CONFUSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "pay": ("pe", "play"),
        "paid": ("played", "payed"),
        "tomorrow": ("to morrow", "tomorow"),
        "yes": ("yas", "s"),
        "no": ("know", "now"),
        "wrong": ("long", "ron"),
        "number": ("numbers", "member"),
        "agent": ("a gent", "urgent"),
        "already": ("all ready",),
        "loan": ("lone", "lawn"),
        "call": ("cal", "all"),
        "later": ("letter",),
        "balance": ("balanced",),
        "internet": ("inter net",),
        "bill": ("bell", "will"),
        "fifteenth": ("fifteen", "fiftieth"),
        "twentieth": ("twenty",),
        "five": ("fine",),
        "six": ("fix",),
        "monday": ("sunday",),
        "friday": ("fry day",),
        "renewed": ("renew",),
        "salary": ("celery",),
        "emi": ("e m i", "amy"),
        "upi": ("u p i",),
        "evening": ("even in",),
        "premium": ("pre meeum",),
        "network": ("net work",),
    },
    "hi": {
        "पेमेंट": ("पेमेंट्स", "प्रेमेंट"),
        "कल": ("काल",),
        "नहीं": ("नई", "नही"),
        "हाँ": ("हां", "हा"),
        "कॉल": ("कोल",),
        "बाद": ("बात",),
        "नंबर": ("नम्बर",),
        "रॉन्ग": ("रोंग", "रांग"),
        "लोन": ("लों", "लोण"),
        "बैलेंस": ("बैलेन्स",),
        "तारीख": ("तारिख",),
        "दूंगा": ("दूँगा", "दुंगा"),
        "भर": ("भार",),
        "बजे": ("बचे",),
        "पांच": ("पाँच",),
    },
    "ta": {
        "கட்டிடுறேன்": ("கட்டிட்டேன்",),
        "இல்லை": ("இல்ல",),
        "ஆமா": ("ஆமாம்",),
        "கால்": ("கோல்",),
        "நம்பர்": ("நம்பரு",),
        "நாளைக்கு": ("நாளக்கு",),
        "பேலன்ஸ்": ("பேலென்ஸ்",),
    },
    "te": {
        "అవును": ("అవునా",),
        "లేదు": ("లేదూ",),
        "కాల్": ("కాలు",),
        "నంబర్": ("నెంబర్",),
        "రేపు": ("రేపే",),
        "కడతాను": ("కడతా",),
    },
}
"""Words ASR mishears, with what it writes instead."""

FILLERS = {
    "en": ("uh", "um", "hmm", "ok"),
    "hi": ("अ", "हम्म", "वो"),
    "ta": ("அ", "ம்ம்"),
    "te": ("అ", "ఆ"),
}

SITUATION_SCENARIOS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "debt_collection",
        "promise to pay",
        (
            "The customer agrees to pay the overdue EMI by the 15th",
            "The customer promises to pay next week after the salary is credited",
            "The customer can pay only half the amount this month",
        ),
    ),
    (
        "debt_collection",
        "already paid",
        (
            "The customer says the EMI was paid yesterday through UPI",
            "The customer paid at the branch and has the receipt",
        ),
    ),
    (
        "debt_collection",
        "dispute",
        (
            "The customer says they never took this loan",
            "The customer disputes the penalty charges on the account",
        ),
    ),
    (
        "debt_collection",
        "callback",
        (
            "The customer is driving and asks to be called in the evening",
            "The customer is in a meeting and asks for a call tomorrow morning",
        ),
    ),
    (
        "debt_collection",
        "wrong number",
        ("The person who answers does not know the account holder",),
    ),
    (
        "insurance_renewal",
        "renewal",
        (
            "The customer wants to renew and asks for a payment link",
            "The customer asks whether the premium can be paid in instalments",
        ),
    ),
    (
        "insurance_renewal",
        "objection",
        (
            "The customer finds the premium too expensive this year",
            "The customer has already renewed with another insurer",
        ),
    ),
    (
        "customer_support",
        "network issue",
        (
            "The customer's mobile internet has not worked since morning",
            "The customer's calls keep dropping at home",
        ),
    ),
    (
        "customer_support",
        "billing",
        (
            "The customer was charged for international roaming without travelling",
            "The customer asks why this month's bill is higher than usual",
        ),
    ),
)
"""(scenario category, scenario, situations): the LLM situations of the metrics database."""

SITUATION_MOODS = (
    "",
    "The customer is angry.",
    "The customer speaks very little English.",
    "The customer is in a hurry.",
)
"""Sentences appended to the base situations to vary them."""
